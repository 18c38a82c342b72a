-- rate.lua - one token bucket, for rate_take (sent on its own, without
-- prelude.lua). KEYS[1] is the bucket, au:rate:<key>: a HASH of tokens
-- (what it held at 'at') and at (unix microseconds, the server's clock).
-- ARGV[1] tokens a second, ARGV[2] burst, ARGV[3] how far ahead a token
-- may be taken (ms). Returns { 1, wait } when a token was taken (wait: ms
-- until it is due, 0 for now), { 0, wait } when none was (wait: ms until a
-- take would succeed). A bucket expires once it would be full again: an
-- absent one reads full. The same arithmetic as mem_rate_take in
-- memory_queue.c and S_RATE in pg_queue.c.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local reserve = tonumber(ARGV[3]) * 1000
local v = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(v[1]), tonumber(v[2])
if not tokens or not at then tokens, at = burst, now end
-- a clock that went back (a failover) refills nothing until it catches up
if now > at then
  tokens = tokens + (now - at) * rate / 1000000
  at = now
end
if tokens > burst then tokens = burst end
local wait = 0
if tokens < 1 then wait = (1 - tokens) / rate * 1000000 end
if wait > reserve then
  return { 0, math.max(1, math.ceil((wait - reserve) / 1000)) }
end
tokens = tokens - 1
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at', string.format('%.0f', at))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return { 1, math.ceil(wait / 1000) }
