-- cancel.lua - removes a waiting computation.
--
-- KEYS, ARGV[1]: the queue's keys and wake cap (prelude.lua)
-- ARGV[2]  id
--
-- Returns 1 removed, 2 leased (left alone), 0 not waiting.

local id = ARGV[2]
local removed = redis.call('ZREM', ksched, id) == 1
if not removed then
  if lease_of(id) then return 2 end
  local body = redis.call('HGET', kbody, id)
  if not body or redis.call('ZSCORE', kdead, id) then return 0 end
  removed = redis.call('LREM', kready .. meta(body), -1, waiting(id)) > 0
end
if removed then
  for _, k in ipairs({kbody, katt, kerr, korder, kstory}) do redis.call('HDEL', k, id) end
  return 1
end
return 0
