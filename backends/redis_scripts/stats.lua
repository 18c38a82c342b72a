-- stats.lua - counts of the queue.
--
-- KEYS, ARGV[1]: the queue's keys and wake cap (prelude.lua)
-- no other ARGV
--
-- Returns {ready, scheduled, leased, dead}.

local ready, leased = 0, redis.call('ZCOUNT', kleased, '-inf', '(+inf')
for _, p in ipairs(redis.call('ZRANGE', kprios, 0, -1)) do
  ready = ready + redis.call('LLEN', kready .. p)
end
for _, b in ipairs(redis.call('ZRANGE', kbatches, 0, -1)) do
  leased = leased + redis.call('SCARD', kbatch .. b)
end
return {ready, redis.call('ZCARD', ksched), leased, redis.call('ZCARD', kdead)}
