-- Store::send_step: a `send` of the system plugin in one step (the script is touch_fn.lua
-- followed by this file). ARGV: prefix, requester id, now ms, key ttl ms, since (now less
-- the granularity, ms), the session id and session version the node has cached for the
-- requester, whether the cached rights allow the send ('1' or ''), seq ('' for none), lease
-- ms, responses kept, the response body to record ('-' for none, '+' .. body), max packets,
-- max bytes, k, the k session keys of the rights, then target id and packet pairs.
-- Returns:
--   {'unknown'}: no live connector has the requester's id; nothing done.
--   {'stale', session id, version, the k keys' stored values ('' where not set)}: the cache
--     does not match the session (another node wrote to it, or the connector was reopened
--     with another session); nothing done: the caller decides again and calls again.
--   {'busy'} {'forgotten'} {'replay', body}: the claim of seq, as sends.lua answers it.
--   {'denied'} (the rights say no) or {'gone'} (the first target is not live): nothing
--     queued; seq is claimed for the caller to complete with the failure's body.
--   {'ok', overflowed ids...}: every packet queued but for targets whose queue would have
--     overflowed, the response recorded for seq, the request recorded as a touch does.
-- Reads come first and the queues are the first writes: a packet that cannot be queued (an
-- error) leaves nothing written. A send taken over from a node that died (its claim older
-- than the lease) skips what that node queued under its once keys (push.lua).
local P, id, now, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local c = P .. 'c:' .. id
local k = tonumber(ARGV[15])
-- A send to oneself (an echo) reads the requester's queue with it (fields 6 to 9, as a
-- target's below): one read of the hash, not two.
local own = ARGV[16 + k] == id
local f
if own then
  f = redis.call('HMGET', c, 'closed', 'active', 'sid', 'sendlast', 'sendfloor', 'bytes', 'holder', 'last', 'acked')
else
  f = redis.call('HMGET', c, 'closed', 'active', 'sid', 'sendlast', 'sendfloor')
end
if f[1] ~= '' then return { 'unknown' } end
local sid = f[3]
-- The session's version changes with every write to its storage (session.lua).
local version = redis.call('HGET', P .. 'sm:' .. sid, 'v') or ''
if sid ~= ARGV[6] or version ~= ARGV[7] then
  local stored = redis.call('HMGET', P .. 's:' .. sid, unpack(ARGV, 16, 15 + k))
  local out = { 'stale', sid, version }
  for i = 1, k do out[#out + 1] = stored[i] or '' end
  return out
end
local seq, set = ARGV[9], {}
local sp = P .. 'sp:' .. id
-- The claim: `fresh` is 'new' (above every seq claimed), 'again' (a claim given back or
-- left by a dead node) or 'floor' (above the highest forgotten one, never claimed).
local fresh, once
if seq ~= '' then
  local n = tonumber(seq)
  if n > tonumber(f[4] or '0') then
    fresh = 'new'
  else
    local since = redis.call('HGET', sp, seq)
    if since then
      if tonumber(now) - tonumber(since) < tonumber(ARGV[10]) then return { 'busy' } end
      fresh, once = 'again', P .. 'once:' .. id .. ':' .. seq
      if redis.call('EXISTS', once) == 0 then once = nil end
    else
      local body = redis.call('HGET', P .. 'sr:' .. id, seq)
      if body then return { 'replay', body } end
      if n <= tonumber(f[5] or '0') then return { 'forgotten' } end
      fresh = 'floor'
    end
  end
end
-- Records the request (touch_fn.lua) and writes the requester's hash once.
local function finish()
  record(P, id, now, ARGV[5], ttl, f[2], sid, set)
  if #set > 0 then redis.call('HSET', c, unpack(set)) end
end
-- Keeps seq claimed: the caller completes it with the failure's body (sends.lua).
local function hold_claim()
  if seq == '' then return end
  if fresh == 'new' then
    set[#set + 1] = 'sendlast'
    set[#set + 1] = seq
  end
  redis.call('HSET', sp, seq, now)
  redis.call('PEXPIRE', sp, ttl)
end
if ARGV[8] ~= '1' then
  hold_claim()
  finish()
  return { 'denied' }
end
-- What each packet does, read before anything is written.
local max_packets, max_bytes = tonumber(ARGV[13]), tonumber(ARGV[14])
local plan, overflowed = {}, {}
for i = 16 + k, #ARGV, 2 do
  local target, text = ARGV[i], ARGV[i + 1]
  local t
  if target == id and own then
    t = { f[1], f[6], f[7], f[8], f[9] }
  else
    t = redis.call('HMGET', P .. 'c:' .. target, 'closed', 'bytes', 'holder', 'last', 'acked')
  end
  local skip = once and redis.call('HEXISTS', once, ((i - 14 - k) / 2) .. ':' .. target) == 1
  if t[1] ~= '' then
    if i == 16 + k then
      hold_claim()
      finish()
      return { 'gone' }
    end
  elseif skip then
    -- Queued by the node that died in the middle of this send.
  else
    local last, bytes = tonumber(t[4]), tonumber(t[2]) + #text
    if last - tonumber(t[5]) >= max_packets or bytes > max_bytes then
      overflowed[#overflowed + 1] = target
    else
      plan[#plan + 1] = { target, text, t[3], string.format('%d', last + 1), string.format('%d', bytes) }
    end
  end
end
local wake = {}
for _, p in ipairs(plan) do
  local target, text, holder, last, bytes = p[1], p[2], p[3], p[4], p[5]
  redis.call('RPUSH', P .. 'q:' .. target, text)
  if target == id then
    set[#set + 1] = 'last'
    set[#set + 1] = last
    set[#set + 1] = 'bytes'
    set[#set + 1] = bytes
  else
    redis.call('HSET', P .. 'c:' .. target, 'last', last, 'bytes', bytes)
  end
  if holder and holder ~= '' then
    local ids = wake[holder]
    if ids then ids[#ids + 1] = target else wake[holder] = { target } end
  end
end
if seq ~= '' then
  -- Completed: recorded as sends.lua's complete records it.
  if fresh == 'new' then
    set[#set + 1] = 'sendlast'
    set[#set + 1] = seq
  else
    redis.call('HDEL', sp, seq)
  end
  if once then redis.call('DEL', once) end
  local sr, so = P .. 'sr:' .. id, P .. 'so:' .. id
  redis.call('HSET', sr, seq, ARGV[12])
  redis.call('ZADD', so, seq, seq)
  local extra = redis.call('ZCARD', so) - tonumber(ARGV[11])
  if extra > 0 then
    local floor = tonumber(f[5] or '0')
    for _, old in ipairs(redis.call('ZRANGE', so, 0, extra - 1)) do
      redis.call('HDEL', sr, old)
      if tonumber(old) > floor then floor = tonumber(old) end
    end
    redis.call('ZREMRANGEBYRANK', so, 0, extra - 1)
    set[#set + 1] = 'sendfloor'
    set[#set + 1] = floor
  end
  redis.call('PEXPIRE', sr, ttl)
  redis.call('PEXPIRE', so, ttl)
end
finish()
for node, ids in pairs(wake) do
  redis.call('PUBLISH', P .. 'n:' .. node, table.concat(ids, ' '))
end
local out = { 'ok' }
for _, target in ipairs(overflowed) do out[#out + 1] = target end
return out
