-- Store::close. ARGV: prefix, connector id, reason, notify (0|1), now ms, retention ms,
-- close command, shared-session linger ms, farewell packet queued before the close command
-- ('' for none), how long the record of a closed session is kept (ms).
-- Returns the connector's {session id, address, user agent, opened, last active} to the one
-- caller that closed it; nil to every other.
local P, id = ARGV[1], ARGV[2]
local c, q = P .. 'c:' .. id, P .. 'q:' .. id
local own = { c, q, P .. 'sp:' .. id, P .. 'sr:' .. id, P .. 'so:' .. id }
local closed = redis.call('HGET', c, 'closed')
if not closed then return nil end
if closed ~= '' then
  -- The client closes a connector whose close is pending: forget it now.
  if ARGV[4] == '0' then redis.call('DEL', unpack(own)) end
  return nil
end
local info = redis.call('HMGET', c, 'sid', 'addr', 'ua', 'opened', 'active')
local holder = redis.call('HGET', c, 'holder')
redis.call('ZREM', P .. 'live', id)
if ARGV[4] == '1' then
  -- Kept, ending with the close command, until that is delivered or the retention passes.
  for _, text in ipairs({ ARGV[9], ARGV[7] }) do
    if text ~= '' then
      redis.call('RPUSH', q, text)
      redis.call('HINCRBY', c, 'last', 1)
      redis.call('HINCRBY', c, 'bytes', #text)
    end
  end
  redis.call('HSET', c, 'closed', ARGV[3])
  for _, k in ipairs(own) do redis.call('PEXPIRE', k, tonumber(ARGV[6])) end
else
  redis.call('DEL', unpack(own))
end
if holder and holder ~= '' then redis.call('PUBLISH', P .. 'n:' .. holder, id) end
-- Leave the session; a shared one lingers for reconnection, another goes at once.
local sid = info[1]
local sm, sc, s = P .. 'sm:' .. sid, P .. 'sc:' .. sid, P .. 's:' .. sid
redis.call('SREM', sc, id)
if redis.call('SCARD', sc) == 0 then
  redis.call('ZREM', P .. 'active', sid)
  -- The record stays listable, closed, for a while (a shared session may come back).
  local sx, shared = P .. 'sx:' .. sid, redis.call('HGET', sm, 'shared') == '1'
  redis.call('HSET', sx, 'closed', ARGV[5], 'last', redis.call('HGET', sm, 'last') or ARGV[5])
  local keep = tonumber(ARGV[10])
  if shared then keep = math.max(keep, tonumber(ARGV[8])) end
  redis.call('PEXPIRE', sx, keep)
  if shared then
    redis.call('HSET', sm, 'empty', ARGV[5])
    redis.call('PEXPIRE', sm, tonumber(ARGV[8]))
    redis.call('PEXPIRE', s, tonumber(ARGV[8]))
  else
    redis.call('DEL', sm, sc, s)
  end
end
return info
