-- The body of Store::touch, shared by touch.lua and poll.lua (each script is this file
-- followed by its own). Records a request of connector `id` at `now`; returns its session
-- id, false if no live connector has the id. Within `granularity` ms of the last recorded
-- activity nothing is written: a busy connector costs one read per request, not a dozen
-- writes.
local function touch(P, id, now, ttl, granularity)
  local c = P .. 'c:' .. id
  local f = redis.call('HMGET', c, 'closed', 'active', 'sid')
  if f[1] ~= '' then return false end
  local sid = f[3]
  if now - tonumber(f[2]) < granularity then return sid end
  redis.call('HSET', c, 'active', now)
  redis.call('ZADD', P .. 'live', now, id)
  local sm = P .. 'sm:' .. sid
  if now > tonumber(redis.call('HGET', sm, 'last') or '0') then
    redis.call('HSET', sm, 'last', now)
    redis.call('ZADD', P .. 'active', now, sid)
  end
  -- Everything of a connector in use outlives the inactivity timeout; if every node is gone,
  -- it all expires by itself.
  for _, k in ipairs({ c, P .. 'q:' .. id, P .. 'sp:' .. id, P .. 'sr:' .. id, P .. 'so:' .. id,
    sm, P .. 'sc:' .. sid, P .. 's:' .. sid, P .. 'sx:' .. sid, P .. 'live', P .. 'active', P .. 'sessions' }) do
    redis.call('PEXPIRE', k, ttl)
  end
  return sid
end
