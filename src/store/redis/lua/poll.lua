-- Store::poll_round. ARGV: prefix, connector id, ticket ('' to begin the poll first), ack
-- ('' for none), now ms, whether the sync waited ('1' or ''), this node, key ttl ms,
-- granularity ms, whether to leave the wake-up of another node to the caller ('1' or '').
-- Beginning records the sync as a request of a live connector (touch_fn.lua) and takes a new
-- ticket; another node that held the last sync is woken so that sync returns (the caller
-- wakes one held on its own node), or named in the answer for the caller to wake (a shared
-- poll wakes them once it has taken all its connectors). A round of a sync that waited
-- records its request again.
-- The connector's `holder` is this node while its sync waits, '' once it answers: a push
-- wakes a node only when a poll is held there.
-- Returns the ticket (0 for an unknown connector), the node left to the caller to wake ('' for
-- none), then what the drain found: 'unknown';
-- 'superseded', acked, closed; 'ahead', last seq; or 'ok', first seq, acked, closed,
-- packets...; closed is '' or the reason.
-- One read of the connector's hash and one write (`set`), so a round is a few commands.
local P, id, node = ARGV[1], ARGV[2], ARGV[7]
local c, q = P .. 'c:' .. id, P .. 'q:' .. id
local now, ttl, granularity = tonumber(ARGV[5]), tonumber(ARGV[8]), tonumber(ARGV[9])
local f = redis.call('HMGET', c, 'closed', 'active', 'sid', 'ticket', 'holder', 'last', 'acked', 'bytes')
local ticket = ARGV[3]
if not f[1] then return { ticket == '' and '0' or ticket, '', 'unknown' } end
local closed, holder = f[1], f[5] or ''
local last, acked, bytes = tonumber(f[6]), tonumber(f[7]), tonumber(f[8] or '0')
local set = {}
if closed == '' and (ticket == '' or ARGV[6] ~= '') then
  record(P, id, now, ttl, granularity, f[2], f[3], set)
end
-- Writes what the round changed in the connector's hash; `waits`: whether the sync waits.
local function finish(waits)
  local want = waits and node or ''
  if holder ~= want then
    set[#set + 1] = 'holder'
    set[#set + 1] = want
  end
  if #set > 0 then redis.call('HSET', c, unpack(set)) end
end
local wake = ''
if ticket == '' then
  ticket = tostring(tonumber(f[4] or '0') + 1)
  set[#set + 1] = 'ticket'
  set[#set + 1] = ticket
  if holder ~= '' and holder ~= node then
    if ARGV[10] == '' then redis.call('PUBLISH', P .. 'n:' .. holder, id) else wake = holder end
  end
elseif f[4] ~= ticket then
  -- A newer sync owns the holder.
  if #set > 0 then redis.call('HSET', c, unpack(set)) end
  return { ticket, '', 'superseded', tostring(acked), closed }
end
local packets, delivered = {}, false
if ARGV[4] ~= '' then
  local ack = tonumber(ARGV[4])
  if ack > last then
    finish(false)
    return { ticket, wake, 'ahead', tostring(last) }
  end
  if ack > acked then
    local n = ack - acked
    for _, p in ipairs(redis.call('LRANGE', q, 0, n - 1)) do bytes = bytes - #p end
    redis.call('LTRIM', q, n, -1)
    acked = ack
    for _, v in ipairs({ 'bytes', bytes, 'acked', acked }) do set[#set + 1] = v end
  end
  if last > acked then packets = redis.call('LRANGE', q, 0, -1) end
  -- Closed and everything, the close command included, acknowledged.
  delivered = closed ~= '' and #packets == 0
elseif last > acked then
  packets = redis.call('LRANGE', q, 0, -1)
  redis.call('DEL', q)
  for _, v in ipairs({ 'bytes', 0, 'acked', last }) do set[#set + 1] = v end
  delivered = closed ~= ''
else
  delivered = closed ~= ''
end
local first = acked + 1
if ARGV[4] == '' then acked = last end
if delivered then
  redis.call('DEL', c, q, P .. 'sp:' .. id, P .. 'sr:' .. id, P .. 'so:' .. id)
else
  finish(#packets == 0 and closed == '')
end
local out = { ticket, wake, 'ok', tostring(first), tostring(acked), closed }
for _, p in ipairs(packets) do out[#out + 1] = p end
return out
