-- Store::open. ARGV: prefix, connector id, session id, address, user agent, now ms,
-- shared (0|1), max connectors, welcome packet, key ttl ms.
-- Returns 'opened', 'exists' (a live connector has the id) or 'full'.
local P, id, sid = ARGV[1], ARGV[2], ARGV[3]
local now, ttl = tonumber(ARGV[6]), tonumber(ARGV[10])
local c, q = P .. 'c:' .. id, P .. 'q:' .. id
local closed = redis.call('HGET', c, 'closed')
if closed == '' then return 'exists' end
if redis.call('ZCARD', P .. 'live') >= tonumber(ARGV[8]) then return 'full' end
-- A closed connector of the same id is replaced; a poll still held on it is woken.
local holder = closed and redis.call('HGET', c, 'holder')
redis.call('DEL', c, q, P .. 'sp:' .. id, P .. 'sr:' .. id, P .. 'so:' .. id)
redis.call('HSET', c, 'sid', sid, 'addr', ARGV[4], 'ua', ARGV[5], 'opened', now, 'active', now,
  'closed', '', 'ticket', 0, 'last', 1, 'acked', 0, 'bytes', #ARGV[9], 'sendlast', 0)
redis.call('RPUSH', q, ARGV[9])
redis.call('ZADD', P .. 'live', now, id)
local sm, sc, sx = P .. 'sm:' .. sid, P .. 'sc:' .. sid, P .. 'sx:' .. sid
if redis.call('EXISTS', sm) == 0 then
  -- The storage's version (session.lua) starts where no earlier session of this id could
  -- have left it: nodes' cached rights of that one do not match (send.lua).
  redis.call('HSET', sm, 'shared', ARGV[7], 'n', 0, 'v', string.format('%.0f', now * 1000))
  -- The session's record for the admin API: who opened it, and when.
  redis.call('DEL', sx)
  redis.call('HSET', sx, 'opened', now, 'addr', ARGV[4], 'ua', ARGV[5])
  redis.call('ZADD', P .. 'sessions', now, sid)
end
redis.call('HDEL', sx, 'closed')
redis.call('HSET', sm, 'last', now)
redis.call('HDEL', sm, 'empty')
redis.call('SADD', sc, id)
redis.call('ZADD', P .. 'active', now, sid)
for _, k in ipairs({ c, q, sm, sc, sx, P .. 's:' .. sid, P .. 'live', P .. 'active', P .. 'sessions' }) do
  redis.call('PEXPIRE', k, ttl)
end
if holder and holder ~= '' then redis.call('PUBLISH', P .. 'n:' .. holder, id) end
return 'opened'
