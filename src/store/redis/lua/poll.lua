-- Store::poll_round. ARGV: prefix, connector id, ticket ('' to begin the poll first), ack
-- ('' for none), now ms, whether the sync waited ('1' or ''), this node, key ttl ms, since
-- (now less the granularity, ms), whether to leave the wake-up of another node to the
-- caller ('1' or '').
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
local P, id, ticket, ack, node = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[7]
local c = P .. 'c:' .. id
local f = redis.call('HMGET', c, 'closed', 'active', 'sid', 'ticket', 'holder', 'last', 'acked', 'bytes')
local closed = f[1]
if not closed then return { ticket == '' and '0' or ticket, '', 'unknown' } end
local q = P .. 'q:' .. id
local holder, last, acked = f[5] or '', f[6], f[7]
local set = {}
if closed == '' and (ticket == '' or ARGV[6] ~= '') then
  record(P, id, ARGV[5], ARGV[9], ARGV[8], f[2], f[3], set)
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
  ticket = string.format('%d', tonumber(f[4] or '0') + 1)
  set[#set + 1] = 'ticket'
  set[#set + 1] = ticket
  if holder ~= '' and holder ~= node then
    if ARGV[10] == '' then redis.call('PUBLISH', P .. 'n:' .. holder, id) else wake = holder end
  end
elseif f[4] ~= ticket then
  -- A newer sync owns the holder.
  if #set > 0 then redis.call('HSET', c, unpack(set)) end
  return { ticket, '', 'superseded', acked, closed }
end
-- `last` and `acked` stay the text Redis gave; `n_last` and `n_acked` are their values.
local n_last, n_acked = tonumber(last), tonumber(acked)
local packets, delivered, first = {}, false, n_acked
if ack ~= '' then
  local n_ack = tonumber(ack)
  if n_ack > n_last then
    finish(false)
    return { ticket, wake, 'ahead', last }
  end
  if n_ack > n_acked then
    local bytes = tonumber(f[8] or '0')
    for _, p in ipairs(redis.call('LPOP', q, n_ack - n_acked) or {}) do bytes = bytes - #p end
    acked, n_acked, first = ack, n_ack, n_ack
    set[#set + 1] = 'bytes'
    set[#set + 1] = string.format('%d', bytes)
    set[#set + 1] = 'acked'
    set[#set + 1] = acked
  end
  if n_last > n_acked then packets = redis.call('LRANGE', q, 0, -1) end
  -- Closed and everything, the close command included, acknowledged.
  delivered = closed ~= '' and #packets == 0
else
  if n_last > n_acked then
    packets = redis.call('LPOP', q, n_last - n_acked) or {}
    set[#set + 1] = 'bytes'
    set[#set + 1] = '0'
    set[#set + 1] = 'acked'
    set[#set + 1] = last
  end
  delivered = closed ~= ''
  acked = last
end
first = string.format('%d', first + 1)
if delivered then
  redis.call('DEL', c, q, P .. 'sp:' .. id, P .. 'sr:' .. id, P .. 'so:' .. id)
else
  finish(#packets == 0 and closed == '')
end
local out = { ticket, wake, 'ok', first, acked, closed }
for i = 1, #packets do out[i + 6] = packets[i] end
return out
