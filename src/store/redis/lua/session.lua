-- Session storage writes. ARGV: prefix, session id, op, then per op:
--   put: key, json     remove: key     clear     login: key, json, key, json...
-- Values are stored as '<insertion index>:<json>' so that reads keep the insertion order.
-- Every op answers nil for an unknown session; login does nothing (returns 0) if the
-- session is already authenticated. remove returns the old json.
local P, sid, op = ARGV[1], ARGV[2], ARGV[3]
local sm, s = P .. 'sm:' .. sid, P .. 's:' .. sid
if redis.call('EXISTS', sm) == 0 then return false end
-- Every write changes the storage's version, by which nodes know their cached rights are
-- still the session's (send.lua).
redis.call('HINCRBY', sm, 'v', 1)
local function put(key, json)
  local old = redis.call('HGET', s, key)
  local idx = old and string.match(old, '^(%d+):') or redis.call('HINCRBY', sm, 'n', 1)
  redis.call('HSET', s, key, idx .. ':' .. json)
end
local function keep_with_meta()
  local ttl = redis.call('PTTL', sm)
  if ttl > 0 then redis.call('PEXPIRE', s, ttl) end
end
if op == 'put' then
  put(ARGV[4], ARGV[5])
  keep_with_meta()
  return 1
elseif op == 'remove' then
  local old = redis.call('HGET', s, ARGV[4])
  redis.call('HDEL', s, ARGV[4])
  if old then return string.match(old, '^%d+:(.*)$') end
  return nil
elseif op == 'clear' then
  redis.call('DEL', s)
  return 1
elseif op == 'login' then
  local auth = redis.call('HGET', s, '$is_authenticated')
  if auth and string.match(auth, '^%d+:(.*)$') == 'true' then return 0 end
  for i = 4, #ARGV, 2 do
    put(ARGV[i], ARGV[i + 1])
    -- The record keeps the user name after the session's storage is gone.
    if ARGV[i] == '$username' then redis.call('HSET', P .. 'sx:' .. sid, 'user', ARGV[i + 1]) end
  end
  keep_with_meta()
  return 1
end
return redis.error_reply('unknown session op ' .. op)
