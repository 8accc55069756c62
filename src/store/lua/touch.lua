-- Store::touch: a request of a live connector. ARGV: prefix, connector id, now ms, key ttl ms,
-- granularity ms. Returns the connector's session id, nil if no live connector has the id.
-- Within the granularity of the last recorded activity nothing is written: a busy connector
-- costs one read per request, not a dozen writes.
local P, id = ARGV[1], ARGV[2]
local now, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local c = P .. 'c:' .. id
local f = redis.call('HMGET', c, 'closed', 'active', 'sid')
if f[1] ~= '' then return false end
local sid = f[3]
if now - tonumber(f[2]) < tonumber(ARGV[5]) then return sid end
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
