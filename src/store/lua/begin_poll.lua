-- Store::begin_poll. ARGV: prefix, connector id, this node, now ms, key ttl ms, granularity
-- ms. Records the sync as a request of a live connector (touch_fn.lua); returns the new
-- ticket (0 for an unknown connector); another node that held the last sync is woken so
-- that sync returns (this node wakes its own at once, before the new sync subscribes: a
-- message to itself would arrive after and wake the new sync for nothing).
local P, id = ARGV[1], ARGV[2]
local c = P .. 'c:' .. id
if redis.call('EXISTS', c) == 0 then return 0 end
touch(P, id, tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]))
local ticket = redis.call('HINCRBY', c, 'ticket', 1)
local old = redis.call('HGET', c, 'holder')
redis.call('HSET', c, 'holder', ARGV[3])
if old and old ~= ARGV[3] then redis.call('PUBLISH', P .. 'n:' .. old, id) end
return ticket
