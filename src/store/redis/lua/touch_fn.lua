-- The body of Store::touch, shared by touch.lua, poll.lua and send.lua (each script is this
-- file followed by its own).
-- Times and counters pass through the scripts as the decimal text Redis and the node write
-- (no sign, no leading zeros): comparing that text costs a fraction of turning it into a
-- number and back, which is a large part of a script's own cost.

-- above: whether decimal text `a` is a greater number than decimal text `b`.
local function above(a, b)
  return #a > #b or (#a == #b and a > b)
end

-- record: records a request at `now` of live connector `id`, whose hash holds `active` and
-- `sid`. Nothing is written when the last recorded activity is after `since` (now less the
-- granularity): a busy connector costs one read per request, not a dozen writes. The
-- connector's own new field values are appended to `set`, for the caller's one HSET of its
-- hash.
local function record(P, id, now, since, ttl, active, sid, set)
  if above(active, since) then return end
  set[#set + 1] = 'active'
  set[#set + 1] = now
  redis.call('ZADD', P .. 'live', now, id)
  local sm = P .. 'sm:' .. sid
  if above(now, redis.call('HGET', sm, 'last') or '0') then
    redis.call('HSET', sm, 'last', now)
    redis.call('ZADD', P .. 'active', now, sid)
  end
  -- Everything of a connector in use outlives the inactivity timeout; if every node is gone,
  -- it all expires by itself.
  for _, k in ipairs({ P .. 'c:' .. id, P .. 'q:' .. id, P .. 'sp:' .. id, P .. 'sr:' .. id, P .. 'so:' .. id,
    sm, P .. 'sc:' .. sid, P .. 's:' .. sid, P .. 'sx:' .. sid, P .. 'live', P .. 'active', P .. 'sessions' }) do
    redis.call('PEXPIRE', k, ttl)
  end
end

-- touch: records a request of connector `id`; returns its session id, false if no live
-- connector has the id.
local function touch(P, id, now, since, ttl)
  local c = P .. 'c:' .. id
  local f = redis.call('HMGET', c, 'closed', 'active', 'sid')
  if f[1] ~= '' then return false end
  local set = {}
  record(P, id, now, since, ttl, f[2], f[3], set)
  if #set > 0 then redis.call('HSET', c, unpack(set)) end
  return f[3]
end
