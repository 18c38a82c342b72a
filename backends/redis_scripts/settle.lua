-- settle.lua - the fenced writes of attempts: ack, retry, release, bury,
-- extend.
--
-- KEYS, ARGV[1]: the queue's keys and wake cap (prelude.lua)
-- ARGV[2]  mode
-- ARGV[3]  lease ms (extend)
-- then per token:
--   the token, n, n ids,
--   then per id its delay ms, (after those) its error or '' and (after
--   those) its story or '' (retry: '' keeps the story it has),
--   or per id its reason (bury)
--
-- An id applies if it is in the token's batch or (extended) has the token
-- in tok. Returns '1' (applied) or '0' (stale token) per id, as one string.
-- One id alone is removed from its batch first (SREM says whether it was
-- in it); more are checked first (SMISMEMBER). A token "<a>-<hex>-<size>"
-- tells when its batch set is empty: removing size ids empties it.
-- Wakes one idle worker per computation made ready (up to the cap).
-- Acks and burials add to processed and failed in stats (one HINCRBY).
-- An ack deletes the story with the rest; bury and release keep it.
-- Acked and buried ids have settled: their dependents (flows) wait for one
-- less (settled; one EXISTS when the queue has none).

local mode, flags, i, ready, counted, fin = ARGV[2], {}, 4, 0, 0, {}
local extra = (mode == 'retry' and 3) or (mode == 'bury' and 1) or 0
while i <= #ARGV do
  local token, n = ARGV[i], tonumber(ARGV[i + 1])
  local first, last, kb, a = i + 2, i + 1 + n, kbatch .. ARGV[i], attempts(ARGV[i]) or 1
  local size = tonumber(string.match(token, '^%d+%-%x+%-(%d+)$'))
  local removed, inset, all = nil, nil, true
  if n == 1 then
    removed = redis.call('SREM', kb, ARGV[first])
    inset = {removed}
  else
    inset = redis.call('SMISMEMBER', kb, unpack(ARGV, first, last))
  end
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
  if #done > #single then
    removed = removed or redis.call('SREM', kb, unpack(done))
    if removed > 0 and (removed == size or redis.call('EXISTS', kb) == 0) then
      redis.call('ZREM', kbatches, token)
    end
  end
  if #single > 0 and mode ~= 'extend' then
    redis.call('HDEL', ktok, unpack(single))
    redis.call('ZREM', kleased, unpack(single))
  end
  if mode == 'ack' or mode == 'bury' then
    counted = counted + #done
    for _, id in ipairs(done) do fin[#fin + 1] = id end
  end
  if #done == 0 then
  elseif mode == 'ack' then
    redis.call('HDEL', kbody, unpack(done))
    -- a first attempt has no att, err or story: requeue clears them
    if a ~= 1 then
      redis.call('HDEL', katt, unpack(done))
      redis.call('HDEL', kerr, unpack(done))
      redis.call('HDEL', kstory, unpack(done))
    end
  elseif mode == 'extend' then
    -- the pin comes along (redis_queue.c says why)
    local d, pin = clock() + tonumber(ARGV[3]), string.rep('~', 80)
    local tok, dl = {pin, pin}, {'+inf', pin}
    for k, id in ipairs(done) do
      tok[2 * k + 1], tok[2 * k + 2] = id, token
      dl[2 * k + 1], dl[2 * k + 2] = d, id
    end
    redis.call('HSET', ktok, unpack(tok))
    redis.call('ZADD', kleased, unpack(dl))
  else
    local att, why, dead, sched, order, groups, story = {}, {}, {}, {}, {}, {}, {}
    local now = clock()
    local bodies, s = redis.call('HMGET', kbody, unpack(done)), nil
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
      local told = mode == 'retry' and ARGV[last + 2 * n + j] or ''
      if told ~= '' then
        story[#story + 1], story[#story + 2] = id, told
      end
      if mode == 'bury' then
        dead[#dead + 1], dead[#dead + 2] = now, id
      elseif delay > 0 then
        s = s or seq(#done)
        sched[#sched + 1], sched[#sched + 2] = now + delay, id
        order[#order + 1], order[#order + 2] = id, p .. ' ' .. (s + k)
      else
        add(groups, p, entry(id, mode == 'release' and a - 1 or a))
      end
    end
    if #att > 0 then redis.call('HSET', katt, unpack(att)) end
    if #why > 0 then redis.call('HSET', kerr, unpack(why)) end
    if #story > 0 then redis.call('HSET', kstory, unpack(story)) end
    if #dead > 0 then redis.call('ZADD', kdead, unpack(dead)) end
    if #sched > 0 then
      redis.call('ZADD', ksched, unpack(sched))
      redis.call('HSET', korder, unpack(order))
    end
    ready = ready + enqueue(groups)
  end
  i = last + 1 + extra * n
end
wake(ready)
settled(fin)
-- the totals of stats: one HINCRBY per call, not per computation
if counted > 0 then
  redis.call('HINCRBY', kstats, mode == 'ack' and 'processed' or 'failed', counted)
end
return table.concat(flags)
