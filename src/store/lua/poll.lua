-- Store::poll_round. ARGV: prefix, connector id, ticket ('' to begin the poll first), ack
-- ('' for none), now ms, whether the sync waited ('1' or ''), this node, key ttl ms,
-- granularity ms.
-- Beginning records the sync as a request of a live connector (touch_fn.lua) and takes a new
-- ticket; another node that held the last sync is woken so that sync returns (the caller
-- wakes one held on its own node). A round of a sync that waited records its request again.
-- Returns the ticket (0 for an unknown connector), then what the drain found: 'unknown';
-- 'superseded', acked, closed; 'ahead', last seq; or 'ok', first seq, acked, closed,
-- packets...; closed is '' or the reason.
local P, id = ARGV[1], ARGV[2]
local c, q = P .. 'c:' .. id, P .. 'q:' .. id
local now, ttl, granularity = tonumber(ARGV[5]), tonumber(ARGV[8]), tonumber(ARGV[9])
local ticket = ARGV[3]
if ticket == '' then
  if redis.call('EXISTS', c) == 0 then return { '0', 'unknown' } end
  touch(P, id, now, ttl, granularity)
  ticket = tostring(redis.call('HINCRBY', c, 'ticket', 1))
  local old = redis.call('HGET', c, 'holder')
  redis.call('HSET', c, 'holder', ARGV[7])
  if old and old ~= ARGV[7] then redis.call('PUBLISH', P .. 'n:' .. old, id) end
elseif ARGV[6] ~= '' then
  touch(P, id, now, ttl, granularity)
end
local f = redis.call('HMGET', c, 'ticket', 'closed', 'last', 'acked')
if not f[1] then return { ticket, 'unknown' } end
local closed, last, acked = f[2], tonumber(f[3]), tonumber(f[4])
if f[1] ~= ticket then return { ticket, 'superseded', tostring(acked), closed } end
local packets, delivered, first
if ARGV[4] ~= '' then
  local ack = tonumber(ARGV[4])
  if ack > last then return { ticket, 'ahead', tostring(last) } end
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
local out = { ticket, 'ok', tostring(first), tostring(acked), closed }
for _, p in ipairs(packets) do out[#out + 1] = p end
return out
