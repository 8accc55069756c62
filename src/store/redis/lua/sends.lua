-- Store::claim_send, complete_send and release_send. ARGV: prefix, connector id,
-- 'claim' | 'complete' | 'release', seq, then for claim: now ms, lease ms; for complete: the
-- stored body ('-' for none, '+' .. body), how many to keep.
-- claim returns {'fresh'}, {'busy'}, {'replay', body} or {'forgotten'}. A claim in progress
-- for longer than the lease (its node died) is taken over: {'fresh'}. `sendfloor` is the
-- highest seq whose response was dropped: a seq above it found nowhere was never claimed (it
-- arrived after a higher one) and runs.
local P, id, seq = ARGV[1], ARGV[2], ARGV[4]
local c, sp, sr, so = P .. 'c:' .. id, P .. 'sp:' .. id, P .. 'sr:' .. id, P .. 'so:' .. id
if redis.call('EXISTS', c) == 0 then return { 'fresh' } end
local ttl = redis.call('PTTL', c)
if ARGV[3] == 'claim' then
  local now = tonumber(ARGV[5])
  if tonumber(seq) > tonumber(redis.call('HGET', c, 'sendlast')) then
    redis.call('HSET', c, 'sendlast', seq)
    redis.call('HSET', sp, seq, now)
    if ttl > 0 then redis.call('PEXPIRE', sp, ttl) end
    return { 'fresh' }
  end
  local since = redis.call('HGET', sp, seq)
  if since then
    if now - tonumber(since) < tonumber(ARGV[6]) then return { 'busy' } end
    redis.call('HSET', sp, seq, now)
    return { 'fresh' }
  end
  local body = redis.call('HGET', sr, seq)
  if body then return { 'replay', body } end
  if tonumber(seq) > tonumber(redis.call('HGET', c, 'sendfloor') or '0') then
    redis.call('HSET', sp, seq, now)
    if ttl > 0 then redis.call('PEXPIRE', sp, ttl) end
    return { 'fresh' }
  end
  return { 'forgotten' }
end
if ARGV[3] == 'release' then
  -- The send failed: a claim dated 0 is older than any lease, so the next claim takes it.
  if redis.call('HEXISTS', sp, seq) == 1 then redis.call('HSET', sp, seq, 0) end
  return { 'released' }
end
redis.call('HDEL', sp, seq)
-- Done: a re-run can no longer happen (a retry is answered from the record below), so the
-- once keys of its packets go.
redis.call('DEL', P .. 'once:' .. id .. ':' .. seq)
redis.call('HSET', sr, seq, ARGV[5])
redis.call('ZADD', so, tonumber(seq), seq)
local extra = redis.call('ZCARD', so) - tonumber(ARGV[6])
if extra > 0 then
  for _, old in ipairs(redis.call('ZRANGE', so, 0, extra - 1)) do
    redis.call('HDEL', sr, old)
    if tonumber(old) > tonumber(redis.call('HGET', c, 'sendfloor') or '0') then
      redis.call('HSET', c, 'sendfloor', old)
    end
  end
  redis.call('ZREMRANGEBYRANK', so, 0, extra - 1)
end
if ttl > 0 then
  redis.call('PEXPIRE', sr, ttl)
  redis.call('PEXPIRE', so, ttl)
end
return { 'done' }
