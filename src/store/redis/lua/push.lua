-- Store::push_many (and push, with one id). ARGV: prefix, packet, max packets, max bytes,
-- once key ('<sender>:<seq>:<n>', '' for none), once ttl ms, connector ids...
-- Returns {status per id}: 'queued', 'overflow' (nothing queued) or 'gone'. A packet whose
-- once key was already used for a connector counts as queued and is not queued again. The
-- once keys of a send live in one hash, 'once:<sender>:<seq>', which the send's completion
-- deletes (sends.lua): only sends in progress, or cut by a dying node, keep any.
-- The queue holds the packets `acked + 1` to `last`. Wakes each node that holds a poll of
-- one of them (its `holder`, poll.lua) once, with the ids it holds, space-separated.
local P, text = ARGV[1], ARGV[2]
local record, n = string.match(ARGV[5], '^(.*):(%d+)$')
if record then record = P .. 'once:' .. record end
local max_packets, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local out, wake = {}, {}
for i = 7, #ARGV do
  local id = ARGV[i]
  local c, q = P .. 'c:' .. id, P .. 'q:' .. id
  local f = redis.call('HMGET', c, 'closed', 'bytes', 'holder', 'last', 'acked')
  local last, bytes = tonumber(f[4]), tonumber(f[2])
  if f[1] ~= '' then
    out[#out + 1] = 'gone'
  elseif record and redis.call('HEXISTS', record, n .. ':' .. id) == 1 then
    out[#out + 1] = 'queued'
  elseif last - tonumber(f[5]) >= max_packets or bytes + #text > max_bytes then
    out[#out + 1] = 'overflow'
  else
    redis.call('RPUSH', q, text)
    redis.call('HSET', c, 'last', last + 1, 'bytes', bytes + #text)
    if record then redis.call('HSET', record, n .. ':' .. id, 1) end
    out[#out + 1] = 'queued'
    if f[3] and f[3] ~= '' then
      local ids = wake[f[3]]
      if ids then ids[#ids + 1] = id else wake[f[3]] = { id } end
    end
  end
end
if record then redis.call('PEXPIRE', record, tonumber(ARGV[6])) end
for node, ids in pairs(wake) do
  redis.call('PUBLISH', P .. 'n:' .. node, table.concat(ids, ' '))
end
return out
