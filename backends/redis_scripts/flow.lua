-- flow.lua - a push of which some computations wait for others (their
-- dependencies, which may sit in any queue), and adopt. Keys of every
-- queue are reached by name (qkey); KEYS are those of the first one's.
--
-- KEYS, ARGV[1]: a queue's keys and wake cap (prelude.lua)
-- ARGV[2]  'push', then per computation:
--            queue, id, priority, run_at ms (0: none), body, n, n deps
--          -> {made ready, made waiting}
--          'adopt', id, deps...
--          -> how many waits it added
--
-- A dependency counts when the backend holds it now: it has a body in some
-- queue and is not dead there (waiting, ready, scheduled or leased; an ack,
-- cancel, empty or drop deletes the body, a bury makes it dead). The
-- computation's own queue is asked first, then those of au:queues. An
-- earlier computation of the same push counts as held. A dependency named
-- twice, or one a computation already waits for (adopt sent again), is
-- counted once: the SADD of the mirror sets says whether it was new.
-- An id its queue knows already is left alone, deps and all, as push.lua
-- does.

local mode, queues, where = ARGV[2], nil, {}

-- the queue holding d, or false
local function held(d, hint)
  local q = where[d]
  if q ~= nil then return q end
  local function has(q)
    return redis.call('HEXISTS', qkey(q, 'body'), d) == 1 and
           not redis.call('ZSCORE', qkey(q, 'dead'), d)
  end
  if has(hint) then
    where[d] = hint
    return hint
  end
  queues = queues or redis.call('SMEMBERS', 'au:queues')
  for _, q in ipairs(queues) do
    if q ~= hint and has(q) then
      where[d] = q
      return q
    end
  end
  where[d] = false
  return false
end

-- w of queue wq waits for d of queue dq: 1 when it did not already
local function needs(w, wq, d, dq)
  -- waiting for itself, it would wait for ever
  if w == d and wq == dq then return 0 end
  if redis.call('SADD', qkey(dq, 'rdeps:') .. d, w .. ' ' .. wq) == 0 then return 0 end
  redis.call('SADD', qkey(wq, 'need:') .. w, d .. ' ' .. dq)
  redis.call('SADD', qkey(dq, 'parents'), d)
  return 1
end

-- whether queue q knows id (which has a body there), as push.lua asks
local function known(q, id, p)
  if redis.call('HEXISTS', qkey(q, 'waiting'), id) == 1 or
     redis.call('HEXISTS', qkey(q, 'tok'), id) == 1 or
     redis.call('ZSCORE', qkey(q, 'sched'), id) or redis.call('ZSCORE', qkey(q, 'dead'), id) then
    return true
  end
  for _, b in ipairs(redis.call('ZRANGE', qkey(q, 'batches'), 0, -1)) do
    if redis.call('SISMEMBER', qkey(q, 'batch:') .. b, id) == 1 then return true end
  end
  local e = entry(id, count(redis.call('HGET', qkey(q, 'att'), id)))
  return redis.call('LPOS', qkey(q, 'ready:') .. p, e, 'RANK', -1) and true or false
end

if mode == 'push' then
  local i, now, wakes, ready, waiting = 3, nil, {}, 0, 0
  while i <= #ARGV do
    local q, id, p, at, body = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]), ARGV[i + 4]
    local n = tonumber(ARGV[i + 5])
    local kb = qkey(q, 'body')
    if redis.call('HEXISTS', kb, id) == 0 or not known(q, id, p) then
      local waits = 0
      for k = i + 6, i + 5 + n do
        local d = ARGV[k]
        local dq = held(d, q)
        if dq then waits = waits + needs(id, q, d, dq) end
      end
      redis.call('HSET', kb, id, body)
      if at > 0 and not now then now = clock() end
      if waits > 0 then
        redis.call('HSET', qkey(q, 'waiting'), id, at)
        waiting = waiting + 1
      elseif at > 0 and at > now then
        redis.call('ZADD', qkey(q, 'sched'), at, id)
        redis.call('HSET', qkey(q, 'order'), id, p .. ' ' .. (seq_of(qkey(q, 'seq'), 1) + 1))
      else
        redis.call('RPUSH', qkey(q, 'ready:') .. p, id)
        redis.call('ZADD', qkey(q, 'prios'), -p, p)
        wakes[q] = (wakes[q] or 0) + 1
        ready = ready + 1
      end
      where[id] = q
    end
    i = i + 6 + n
  end
  wake_all(wakes)
  return {ready, waiting}
elseif mode == 'adopt' then
  local id, iq, added = ARGV[3], nil, 0
  queues = redis.call('SMEMBERS', 'au:queues')
  for _, q in ipairs(queues) do
    if redis.call('SISMEMBER', qkey(q, 'parents'), id) == 1 then
      iq = q
      break
    end
  end
  if not iq then return 0 end
  local ws = redis.call('SMEMBERS', qkey(iq, 'rdeps:') .. id)
  for k = 4, #ARGV do
    local dq = held(ARGV[k], iq)
    if dq then
      for _, e in ipairs(ws) do
        added = added + needs(string.sub(e, 1, 32), string.sub(e, 34), ARGV[k], dq)
      end
    end
  end
  return added
end
return redis.error_reply('unknown mode ' .. tostring(mode))
