-- admin.lua - what au's administration commands do to a queue; none of it
-- is on the path of a computation.
--
-- KEYS, ARGV[1]: the queue's keys and wake cap (prelude.lua)
-- ARGV[2]  mode, then its own arguments:
--   dead max [id]     -> {id, died at ms, attempts, reason, body, story
--                        ('' when none), ...}: the dead letters newest
--                        first, or the one named
--   requeue id...     -> '1' or '0' per id, one string: back to the end of
--                        its ready list as a first attempt (att, err and
--                        story cleared) if it was dead
--   purge older max   -> how many of the oldest dead buried at least older
--                        ms ago were deleted (up to max)
--   pause 1|0         -> 1; resuming wakes idle workers
--   empty max         -> how many waiting (ready, scheduled, or for their
--                        dependencies) were deleted
--   drop force        -> 1 dropped, or {ready, scheduled, leased, dead,
--                        waiting} when it holds some and force is 0
-- What empty and drop delete has settled: its dependents in other queues
-- wait for one less (settled).
--   housekeep max age -> how many dead letters went: the oldest beyond
--                        max (0: no bound) or buried more than age ms ago
--                        (0: no bound), up to 1000; also samples processed
--                        for the rate of stats.lua (prev_n/prev_at, taken
--                        from mark_n/mark_at after 30 s)
-- The data of whatever goes is deleted with it.

local mode = ARGV[2]
local function forget(ids)
  if #ids == 0 then return end
  for _, k in ipairs({kbody, katt, kerr, korder, kstory}) do redis.call('HDEL', k, unpack(ids)) end
end

if mode == 'dead' then
  local ids, at = {}, {}
  if ARGV[4] then
    local s = redis.call('ZSCORE', kdead, ARGV[4])
    if not s then return {} end
    ids[1], at[1] = ARGV[4], s
  else
    local flat = redis.call('ZREVRANGE', kdead, 0, tonumber(ARGV[3]) - 1, 'WITHSCORES')
    for i = 1, #flat, 2 do ids[#ids + 1], at[#at + 1] = flat[i], flat[i + 1] end
  end
  if #ids == 0 then return {} end
  local att, why = redis.call('HMGET', katt, unpack(ids)), redis.call('HMGET', kerr, unpack(ids))
  local body, story = redis.call('HMGET', kbody, unpack(ids)), redis.call('HMGET', kstory, unpack(ids))
  local out = {}
  for i, id in ipairs(ids) do
    local k = 6 * (i - 1)
    out[k + 1], out[k + 2], out[k + 3] = id, tostring(at[i]), att[i] or '0'
    out[k + 4], out[k + 5], out[k + 6] = why[i] or '', body[i] or '', story[i] or ''
  end
  return out
elseif mode == 'requeue' then
  local flags, groups, ids = {}, {}, {}
  for i = 3, #ARGV do
    local id = ARGV[i]
    if redis.call('ZREM', kdead, id) == 1 then
      flags[#flags + 1], ids[#ids + 1] = '1', id
      add(groups, meta(redis.call('HGET', kbody, id)), id)
    else
      flags[#flags + 1] = '0'
    end
  end
  if #ids > 0 then
    redis.call('HDEL', katt, unpack(ids))
    redis.call('HDEL', kerr, unpack(ids))
    redis.call('HDEL', kstory, unpack(ids))
    if redis.call('EXISTS', kpaused) == 0 then wake(enqueue(groups)) else enqueue(groups) end
  end
  return table.concat(flags)
elseif mode == 'purge' then
  local older, max = tonumber(ARGV[3]), tonumber(ARGV[4])
  local ids = redis.call('ZRANGEBYSCORE', kdead, '-inf', clock() - older, 'LIMIT', 0, max)
  if #ids > 0 then
    redis.call('ZREM', kdead, unpack(ids))
    forget(ids)
  end
  return #ids
elseif mode == 'pause' then
  if ARGV[3] == '1' then
    redis.call('SET', kpaused, '1')
  elseif redis.call('DEL', kpaused) == 1 then
    wake(tonumber(ARGV[1]))
  end
  return 1
elseif mode == 'empty' then
  local max, ids = tonumber(ARGV[3]), {}
  for _, p in ipairs(redis.call('ZRANGE', kprios, 0, -1)) do
    if #ids >= max then break end
    local part = redis.call('LPOP', kready .. p, max - #ids) or {}
    if #part < max - #ids then redis.call('ZREM', kprios, p) end
    for _, e in ipairs(part) do ids[#ids + 1] = string.match(e, '^(%S+)') or e end
  end
  if #ids < max then
    local s = redis.call('ZRANGE', ksched, 0, max - #ids - 1)
    if #s > 0 then
      redis.call('ZREM', ksched, unpack(s))
      for _, id in ipairs(s) do ids[#ids + 1] = id end
    end
  end
  if #ids < max and redis.call('EXISTS', kwaiting) == 1 then
    for _, id in ipairs(redis.call('HKEYS', kwaiting)) do
      if #ids >= max then break end
      unneed(id)
      ids[#ids + 1] = id
    end
  end
  forget(ids)
  settled(ids)
  return #ids
elseif mode == 'drop' then
  local ready, leased = 0, redis.call('ZCOUNT', kleased, '-inf', '(+inf')
  local prios, batches = redis.call('ZRANGE', kprios, 0, -1), redis.call('ZRANGE', kbatches, 0, -1)
  for _, p in ipairs(prios) do ready = ready + redis.call('LLEN', kready .. p) end
  for _, b in ipairs(batches) do leased = leased + redis.call('SCARD', kbatch .. b) end
  local sched, dead = redis.call('ZCARD', ksched), redis.call('ZCARD', kdead)
  local waiting = redis.call('HLEN', kwaiting)
  if ARGV[3] ~= '1' and ready + sched + leased + dead + waiting > 0 then
    return {ready, sched, leased, dead, waiting}
  end
  -- what it held settles: dependents of its computations in other queues
  -- wait for one less (its own waiting ones go first, with their waits)
  for _, id in ipairs(redis.call('HKEYS', kwaiting)) do unneed(id) end
  if redis.call('EXISTS', kparents) == 1 then
    local ids = redis.call('ZRANGE', ksched, 0, -1)
    for _, p in ipairs(prios) do
      for _, e in ipairs(redis.call('LRANGE', kready .. p, 0, -1)) do
        ids[#ids + 1] = string.match(e, '^(%S+)') or e
      end
    end
    for _, b in ipairs(batches) do
      for _, id in ipairs(redis.call('SMEMBERS', kbatch .. b)) do ids[#ids + 1] = id end
    end
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', kleased, '-inf', '(+inf')) do
      ids[#ids + 1] = id
    end
    settled(ids)
  end
  local keys = {kprios, ksched, kleased, kdead, kseq, krescue, kbody, katt, ktok, kerr, korder,
                kbatches, kwake, kpaused, kstats, kstory, kwaiting, kparents}
  for _, d in ipairs(redis.call('SMEMBERS', kparents)) do keys[#keys + 1] = krdeps .. d end
  for _, p in ipairs(prios) do keys[#keys + 1] = kready .. p end
  for _, b in ipairs(batches) do keys[#keys + 1] = kbatch .. b end
  redis.call('DEL', unpack(keys))
  return 1
elseif mode == 'housekeep' then
  local max, age, now, ids = tonumber(ARGV[3]), tonumber(ARGV[4]), clock(), {}
  if age > 0 then
    ids = redis.call('ZRANGEBYSCORE', kdead, '-inf', '(' .. (now - age), 'LIMIT', 0, 1000)
  end
  if max > 0 and #ids < 1000 then
    local over = redis.call('ZCARD', kdead) - #ids - max
    if over > 0 then
      if over > 1000 - #ids then over = 1000 - #ids end
      for _, id in ipairs(redis.call('ZRANGE', kdead, #ids, #ids + over - 1)) do
        ids[#ids + 1] = id
      end
    end
  end
  if #ids > 0 then
    redis.call('ZREM', kdead, unpack(ids))
    forget(ids)
  end
  local s = redis.call('HMGET', kstats, 'processed', 'mark_n', 'mark_at')
  local done, mat = tonumber(s[1] or '') or 0, tonumber(s[3] or '')
  if not mat then
    redis.call('HSET', kstats, 'prev_n', done, 'prev_at', now, 'mark_n', done, 'mark_at', now)
  elseif now - mat >= 30000 then
    redis.call('HSET', kstats, 'prev_n', s[2], 'prev_at', mat, 'mark_n', done, 'mark_at', now)
  end
  return #ids
end
return redis.error_reply('unknown mode ' .. tostring(mode))
