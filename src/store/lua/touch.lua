-- Store::touch: a request of a live connector (touch_fn.lua). ARGV: prefix, connector id,
-- now ms, key ttl ms, granularity ms. Returns the connector's session id, nil if no live
-- connector has the id.
return touch(ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))
