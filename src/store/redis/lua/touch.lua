-- Store::touch and Store::touch_reading: a request of a live connector (touch_fn.lua). ARGV:
-- prefix, connector id, now ms, key ttl ms, since (now less the granularity, in ms), then the
-- keys of the connector's session to read, if any. Returns the connector's session id, nil if
-- no live connector has the id; with keys to read, {session id, {the keys' stored values, nil
-- where not set}}.
local sid = touch(ARGV[1], ARGV[2], ARGV[3], ARGV[5], ARGV[4])
if not sid or #ARGV < 6 then return sid end
return { sid, redis.call('HMGET', ARGV[1] .. 's:' .. sid, unpack(ARGV, 6)) }
