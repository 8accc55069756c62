-- Redis Cluster only: admission of a connector under maxconnections. KEYS[1]: the admitted
-- set (connector ids by admission time), the one place where every partition's connectors
-- are counted at once. ARGV: connector id, now ms, max connectors, key ttl ms.
-- Returns 'held' (the id is admitted already: live, or left by a node that died), 'full' or
-- 'admitted'. A connector leaves the set when it is closed.
local admitted, id = KEYS[1], ARGV[1]
if redis.call('ZSCORE', admitted, id) then return 'held' end
if redis.call('ZCARD', admitted) >= tonumber(ARGV[3]) then return 'full' end
redis.call('ZADD', admitted, ARGV[2], id)
redis.call('PEXPIRE', admitted, ARGV[4])
return 'admitted'
