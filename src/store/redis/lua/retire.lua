-- Before a connector id is opened in another partition (Redis Cluster: its new session lives
-- elsewhere), its old connector in this one is forgotten, unless it is live. ARGV: prefix
-- (this partition's), connector id.
-- Returns 'live' (nothing done) or 'gone' (a closed one forgotten, a poll held on it woken).
local P, id = ARGV[1], ARGV[2]
local c = P .. 'c:' .. id
local f = redis.call('HMGET', c, 'closed', 'holder')
if f[1] == '' then return 'live' end
if f[1] then
  redis.call('DEL', c, P .. 'q:' .. id, P .. 'sp:' .. id, P .. 'sr:' .. id, P .. 'so:' .. id)
  if f[2] and f[2] ~= '' then redis.call('PUBLISH', P .. 'n:' .. f[2], id) end
end
return 'gone'
