-- stats.lua - counts of the queue.
--
-- KEYS, ARGV[1]: the queue's keys and wake cap (prelude.lua)
-- no other ARGV
--
-- Returns {ready, scheduled, leased, dead, paused (0 or 1), processed,
-- failed, acks per minute, waiting (for dependencies)}. The rate compares processed with the sample
-- housekeeping took 30 to 70 s ago (admin.lua), or with a younger one as
-- if it were 30 s old; 0 without one.

local ready, leased = 0, redis.call('ZCOUNT', kleased, '-inf', '(+inf')
for _, p in ipairs(redis.call('ZRANGE', kprios, 0, -1)) do
  ready = ready + redis.call('LLEN', kready .. p)
end
for _, b in ipairs(redis.call('ZRANGE', kbatches, 0, -1)) do
  leased = leased + redis.call('SCARD', kbatch .. b)
end
local s = redis.call('HMGET', kstats, 'processed', 'failed', 'prev_n', 'prev_at')
local done, rate = tonumber(s[1] or '') or 0, 0
local pn, pat = tonumber(s[3] or ''), tonumber(s[4] or '')
if pn and pat then
  local span = clock() - pat
  -- a young sample (a worker just started) counts as 30 s old
  if done >= pn then rate = math.floor((done - pn) * 60000 / math.max(span, 30000)) end
end
return {ready, redis.call('ZCARD', ksched), leased, redis.call('ZCARD', kdead),
        redis.call('EXISTS', kpaused), done, tonumber(s[2] or '') or 0, rate,
        redis.call('HLEN', kwaiting)}
