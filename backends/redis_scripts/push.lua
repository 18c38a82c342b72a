-- push.lua - adds computations to one ready list (or sched). A big push
-- runs in a MULTI just before the HSET of the bodies, so these never pass
-- through Lua; a small one brings its bodies and writes them here.
--
-- KEYS, ARGV[1]: the queue's keys and wake cap (prelude.lua)
-- ARGV[2]  priority p of all of them
-- ARGV[3]  n, how many
-- ARGV[4]  'check'; 'fresh' when the caller knows none of the ids has a
--          body; 'body' when the bodies follow (last) and this script
--          writes them
-- ARGV[5 .. 4+n]      the ids
-- ARGV[5+n .. 4+2n]   their run_at ms, only when some have one
-- then, with 'body':  id, body, id, body, ... (2n)
--
-- Ids the queue knows are left alone, so sending a push again is harmless:
-- only ids that have a body are looked up, a few commands for all of them
-- (a ready one by LPOS from the tail of its list, where a push sent again
-- finds it at once). With 'body', the HSET's count of new fields tells:
-- all new, none is known.
-- Wakes one idle worker per computation made ready (up to the cap).
-- Returns how many became ready.

local p, n, mode = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local body = mode == 'body'
local timed = #ARGV > 4 + n + (body and 2 * n or 0)
local fresh, known, all = mode == 'fresh', {}, false
if body then
  local at = 5 + n + (timed and n or 0)
  fresh = redis.call('HSET', kbody, unpack(ARGV, at, at + 2 * n - 1)) == n
  -- some had a body before this HSET: look them all up
  all = not fresh
elseif not fresh then
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
  wake(n)
  return n
end
local now = timed and clock() or 0
-- each question once for all the ids to look up (LPOS apart, for those
-- found nowhere else)
local look, busy = {}, {}
for i = 1, n do
  if all or known[i] then look[#look + 1] = ARGV[4 + i] end
end
if #look > 0 then
  local tok = redis.call('HMGET', ktok, unpack(look))
  local sc = redis.call('ZMSCORE', ksched, unpack(look))
  local dd = redis.call('ZMSCORE', kdead, unpack(look))
  local wt = redis.call('HMGET', kwaiting, unpack(look))
  local att, inb = redis.call('HMGET', katt, unpack(look)), {}
  for _, b in ipairs(redis.call('ZRANGE', kbatches, 0, -1)) do
    for j, m in ipairs(redis.call('SMISMEMBER', kbatch .. b, unpack(look))) do
      if m == 1 then inb[j] = true end
    end
  end
  for j, id in ipairs(look) do
    busy[id] = tok[j] or sc[j] or dd[j] or wt[j] or inb[j] or
               redis.call('LPOS', kready .. p, entry(id, count(att[j])), 'RANK', -1)
  end
end
local ready, sched, order, s = {}, {}, {}, nil
for i = 1, n do
  local id, at = ARGV[4 + i], timed and tonumber(ARGV[4 + n + i]) or 0
  if not busy[id] then
    if at > now then
      s = (s or seq(n)) + 1
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
  wake(#ready)
end
return #ready
