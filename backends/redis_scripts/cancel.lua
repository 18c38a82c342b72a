-- cancel.lua - removes a computation that waits: to run (ready, sched) or
-- for its dependencies (waiting). It has settled: its dependents wait for
-- one less (settled).
--
-- KEYS, ARGV[1]: the queue's keys and wake cap (prelude.lua)
-- ARGV[2]  id
--
-- Returns {1 removed, 2 leased (left alone), 0 not waiting; then, for 1
-- and 2, its body, the attempts it made (the running one included) and
-- its story ('' when none)}: what the canceller's record is made of.

local id = ARGV[2]
local body = redis.call('HGET', kbody, id)
local function seen(v, a)
  return {v, body or '', a or 0, redis.call('HGET', kstory, id) or ''}
end
local function forget()
  for _, k in ipairs({kbody, katt, kerr, korder, kstory}) do redis.call('HDEL', k, id) end
end
if redis.call('HEXISTS', kwaiting, id) == 1 then
  local r = seen(1, 0)
  unneed(id)
  forget()
  settled({id})
  return r
end
local removed = redis.call('ZREM', ksched, id) == 1
if not removed then
  local token = lease_of(id)
  if token then return seen(2, attempts(token)) end
  if not body or redis.call('ZSCORE', kdead, id) then return {0, '', 0, ''} end
  removed = redis.call('LREM', kready .. meta(body), -1, waiting(id)) > 0
end
if removed then
  local r = seen(1, count(redis.call('HGET', katt, id)))
  forget()
  settled({id})
  return r
end
return {0, '', 0, ''}
