-- push.lua - adds computations to one ready list (or sched), ids only.
-- Runs in a MULTI just before the HSET of the bodies, so these never pass
-- through Lua.
--
-- KEYS, ARGV[1]: the queue's keys and wake channel (prelude.lua)
-- ARGV[2]  priority p of all of them
-- ARGV[3]  n, how many
-- ARGV[4]  'check', or 'fresh' when the caller knows none of the ids has a
--          body
-- ARGV[5 .. 4+n]      the ids
-- ARGV[5+n .. 4+2n]   their run_at ms, only when some have one
--
-- Ids the queue knows are left alone, so sending a push again is harmless:
-- only ids that have a body are looked up (a ready one by LPOS from the
-- tail of its list, where a push sent again finds it at once).
-- Returns how many became ready.

local p, n, fresh = ARGV[2], tonumber(ARGV[3]), ARGV[4] == 'fresh'
local timed, known = #ARGV > 4 + n, {}
local now = timed and clock() or 0
if not fresh then
  known, fresh = redis.call('HMGET', kbody, unpack(ARGV, 5, 4 + n)), true
  for i = 1, n do
    if known[i] then
      fresh = false
      break
    end
  end
end
if fresh and not timed then
  redis.call('RPUSH', kready .. p, unpack(ARGV, 5, 4 + n))
  redis.call('ZADD', kprios, -p, p)
  redis.call('PUBLISH', ARGV[1], n)
  return n
end
local ready, sched, order, s = {}, {}, {}, nil
for i = 1, n do
  local id, at = ARGV[4 + i], timed and tonumber(ARGV[4 + n + i]) or 0
  if not known[i] or not (lease_of(id) or redis.call('ZSCORE', ksched, id) or
                          redis.call('ZSCORE', kdead, id) or
                          redis.call('LPOS', kready .. p, waiting(id), 'RANK', -1)) then
    if at > now then
      s = (s or redis.call('INCRBY', kseq, n) - n) + 1
      sched[#sched + 1], sched[#sched + 2] = ARGV[4 + n + i], id
      order[#order + 1], order[#order + 2] = id, p .. ' ' .. s
    else
      ready[#ready + 1] = id
    end
  end
end
if #sched > 0 then
  redis.call('ZADD', ksched, unpack(sched))
  redis.call('HSET', korder, unpack(order))
end
if #ready > 0 then
  redis.call('RPUSH', kready .. p, unpack(ready))
  redis.call('ZADD', kprios, -p, p)
  redis.call('PUBLISH', ARGV[1], #ready)
end
return #ready
