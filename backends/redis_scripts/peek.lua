-- peek.lua - what the queue knows of one computation.
--
-- KEYS, ARGV[1]: the queue's keys and wake cap (prelude.lua)
-- ARGV[2]  id
--
-- Returns {state (enum au_job_state, 0 unknown), attempts, max_attempts,
-- last error, story ('' when none: a stored story is never empty)}.

local id, st = ARGV[2], 0
local token, body = lease_of(id), redis.call('HGET', kbody, id)
if token then
  st = 3
elseif redis.call('ZSCORE', ksched, id) then
  st = 2
elseif redis.call('ZSCORE', kdead, id) then
  st = 4
elseif redis.call('HEXISTS', kwaiting, id) == 1 then
  st = 5
elseif body then
  st = 1
end
if st == 0 then return {0, 0, 0, '', ''} end
local _, m = meta(body)
return {st, attempts(token) or count(redis.call('HGET', katt, id)) or 0, m,
        redis.call('HGET', kerr, id) or '', redis.call('HGET', kstory, id) or ''}
