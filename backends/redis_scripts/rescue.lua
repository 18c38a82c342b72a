-- rescue.lua - returns expired leases to their ready list, or buries those
-- that used up max_attempts. At most one sweep per queue per throttle.
--
-- KEYS, ARGV[1]: the queue's keys and wake cap (prelude.lua)
-- ARGV[2]  max
-- ARGV[3]  throttle ms (a full sweep lifts it)
--
-- Wakes one idle worker per computation requeued (up to the cap). The
-- buried have settled: their dependents wait for one less (settled).
-- Returns {requeued, buried}.

if not redis.call('SET', krescue, '1', 'NX', 'PX', ARGV[3]) then return {0, 0} end
local max, now, ids, toks = tonumber(ARGV[2]), clock(), {}, {}
for _, b in ipairs(redis.call('ZRANGEBYSCORE', kbatches, '-inf', now, 'LIMIT', 0, max)) do
  if #ids < max then
    for _, id in ipairs(redis.call('SPOP', kbatch .. b, max - #ids)) do
      ids[#ids + 1], toks[#toks + 1] = id, b
    end
    if redis.call('EXISTS', kbatch .. b) == 0 then redis.call('ZREM', kbatches, b) end
  end
end
if #ids < max then
  local exp = redis.call('ZRANGEBYSCORE', kleased, '-inf', now, 'LIMIT', 0, max - #ids)
  if #exp > 0 then
    local cur = redis.call('HMGET', ktok, unpack(exp))
    redis.call('ZREM', kleased, unpack(exp))
    redis.call('HDEL', ktok, unpack(exp))
    for i, id in ipairs(exp) do
      ids[#ids + 1], toks[#toks + 1] = id, cur[i]
    end
  end
end
if #ids == max then redis.call('DEL', krescue) end
if #ids == 0 then return {0, 0} end
local bodies = redis.call('HMGET', kbody, unpack(ids))
local att, why, dead, groups, fin = {}, {}, {}, {}, {}
for i, id in ipairs(ids) do
  local a, p, m = attempts(toks[i]) or 1, meta(bodies[i])
  att[#att + 1], att[#att + 2] = id, a
  if a >= m then
    why[#why + 1], why[#why + 2] = id, 'lease expired after ' .. a .. ' attempts'
    dead[#dead + 1], dead[#dead + 2] = now, id
    fin[#fin + 1] = id
  else
    why[#why + 1], why[#why + 2] = id, 'lease expired on attempt ' .. a
    add(groups, p, entry(id, a))
  end
end
redis.call('HSET', katt, unpack(att))
redis.call('HSET', kerr, unpack(why))
if #dead > 0 then
  redis.call('ZADD', kdead, unpack(dead))
  redis.call('HINCRBY', kstats, 'failed', #dead / 2)
end
local requeued = enqueue(groups)
wake(requeued)
settled(fin)
return {requeued, #dead / 2}
