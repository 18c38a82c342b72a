-- settle.lua - the fenced writes of attempts: ack, retry, release, bury,
-- extend, or drop (only ends the lease, of an id the lease found without a
-- body).
--
-- KEYS, ARGV[1]: the queue's keys and wake channel (prelude.lua)
-- ARGV[2]  mode
-- ARGV[3]  lease ms (extend)
-- then per token:
--   the token, n, n ids,
--   then per id its delay ms and (after those) its error or '' (retry),
--   or per id its reason (bury)
--
-- An id applies if it is in the token's batch or (extended) has the token
-- in tok. Returns '1' (applied) or '0' (stale token) per id, as one string.

local mode, flags, i = ARGV[2], {}, 4
local extra = (mode == 'retry' and 2) or (mode == 'bury' and 1) or 0
while i <= #ARGV do
  local token, n = ARGV[i], tonumber(ARGV[i + 1])
  local first, last, kb, a = i + 2, i + 1 + n, kbatch .. ARGV[i], attempts(ARGV[i]) or 1
  local inset, all = redis.call('SMISMEMBER', kb, unpack(ARGV, first, last)), true
  local done, at, single = {}, nil, {}
  for j = 1, n do
    if inset[j] ~= 1 then
      all = false
      break
    end
  end
  if all then
    done = {unpack(ARGV, first, last)}
    flags[#flags + 1] = string.rep('1', n)
  else
    local cur, f = redis.call('HMGET', ktok, unpack(ARGV, first, last)), {}
    at = {}
    for j = 1, n do
      f[j] = '0'
      if inset[j] == 1 or cur[j] == token then
        f[j], done[#done + 1], at[#at + 1] = '1', ARGV[first + j - 1], j
        if inset[j] ~= 1 then single[#single + 1] = ARGV[first + j - 1] end
      end
    end
    flags[#flags + 1] = table.concat(f)
  end
  if #done > #single and redis.call('SREM', kb, unpack(done)) > 0 and
     redis.call('EXISTS', kb) == 0 then
    redis.call('ZREM', kbatches, token)
  end
  if #single > 0 and mode ~= 'extend' then
    redis.call('HDEL', ktok, unpack(single))
    redis.call('ZREM', kleased, unpack(single))
  end
  if #done == 0 or mode == 'drop' then
  elseif mode == 'ack' then
    redis.call('HDEL', kbody, unpack(done))
    if a ~= 1 then
      redis.call('HDEL', katt, unpack(done))
      redis.call('HDEL', kerr, unpack(done))
    end
  elseif mode == 'extend' then
    local d, tok, dl = clock() + tonumber(ARGV[3]), {}, {}
    for k, id in ipairs(done) do
      tok[2 * k - 1], tok[2 * k] = id, token
      dl[2 * k - 1], dl[2 * k] = d, id
    end
    redis.call('HSET', ktok, unpack(tok))
    redis.call('ZADD', kleased, unpack(dl))
  else
    local att, why, dead, sched, order, groups = {}, {}, {}, {}, {}, {}
    local now = clock()
    local bodies = redis.call('HMGET', kbody, unpack(done))
    local s = redis.call('INCRBY', kseq, #done) - #done
    for k, id in ipairs(done) do
      local j, p = at and at[k] or k, meta(bodies[k])
      local delay = mode == 'retry' and tonumber(ARGV[last + j]) or 0
      local text = (mode == 'retry' and ARGV[last + n + j]) or
                   (mode == 'bury' and ARGV[last + j]) or ''
      if mode ~= 'release' then
        att[#att + 1], att[#att + 2] = id, a
      end
      if mode == 'bury' or text ~= '' then
        why[#why + 1], why[#why + 2] = id, text
      end
      if mode == 'bury' then
        dead[#dead + 1], dead[#dead + 2] = now, id
      elseif delay > 0 then
        sched[#sched + 1], sched[#sched + 2] = now + delay, id
        order[#order + 1], order[#order + 2] = id, p .. ' ' .. (s + k)
      else
        add(groups, p, entry(id, mode == 'release' and a - 1 or a))
      end
    end
    if #att > 0 then redis.call('HSET', katt, unpack(att)) end
    if #why > 0 then redis.call('HSET', kerr, unpack(why)) end
    if #dead > 0 then redis.call('ZADD', kdead, unpack(dead)) end
    if #sched > 0 then
      redis.call('ZADD', ksched, unpack(sched))
      redis.call('HSET', korder, unpack(order))
    end
    enqueue(groups)
  end
  i = last + 1 + extra * n
end
return table.concat(flags)
