-- Store::drain. ARGV: prefix, connector id, ticket, ack ('' for none), the time to record
-- a request at first ('' for none; touch_fn.lua), key ttl ms, granularity ms.
-- Returns {'unknown'}, {'superseded', acked, closed}, {'ahead', last seq} or
-- {'ok', first seq, acked, closed, packets...}; closed is '' or the reason.
local P, id = ARGV[1], ARGV[2]
local c, q = P .. 'c:' .. id, P .. 'q:' .. id
if ARGV[5] ~= '' then touch(P, id, tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])) end
local f = redis.call('HMGET', c, 'ticket', 'closed', 'last', 'acked')
if not f[1] then return { 'unknown' } end
local closed, last, acked = f[2], tonumber(f[3]), tonumber(f[4])
if f[1] ~= ARGV[3] then return { 'superseded', tostring(acked), closed } end
local packets, delivered, first
if ARGV[4] ~= '' then
  local ack = tonumber(ARGV[4])
  if ack > last then return { 'ahead', tostring(last) } end
  if ack > acked then
    local n = ack - acked
    local bytes = 0
    for _, p in ipairs(redis.call('LRANGE', q, 0, n - 1)) do bytes = bytes + #p end
    redis.call('LTRIM', q, n, -1)
    redis.call('HINCRBY', c, 'bytes', -bytes)
    acked = ack
    redis.call('HSET', c, 'acked', acked)
  end
  first = acked + 1
  packets = redis.call('LRANGE', q, 0, -1)
  -- Closed and everything, the close command included, acknowledged.
  delivered = closed ~= '' and #packets == 0
else
  first = acked + 1
  packets = redis.call('LRANGE', q, 0, -1)
  redis.call('DEL', q)
  acked = last
  redis.call('HSET', c, 'bytes', 0, 'acked', acked)
  delivered = closed ~= ''
end
if delivered then
  redis.call('DEL', c, q, P .. 'sp:' .. id, P .. 'sr:' .. id, P .. 'so:' .. id)
end
local out = { 'ok', tostring(first), tostring(acked), closed }
for _, p in ipairs(packets) do out[#out + 1] = p end
return out
