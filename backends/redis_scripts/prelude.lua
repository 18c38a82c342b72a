-- prelude.lua - the start of every script of the Redis queue: its keys as
-- locals and the helpers the scripts share. redis_queue.c sends each script
-- as this text followed by the script's own file.
--
-- KEYS (the same 22 for every script, in this order: key_names in
-- redis_queue.c; docs/redis-layout.md says what each holds):
--   KEYS[1]  au:{q}:prios      KEYS[8]  au:{q}:att
--   KEYS[2]  au:{q}:sched      KEYS[9]  au:{q}:tok
--   KEYS[3]  au:{q}:leased     KEYS[10] au:{q}:err
--   KEYS[4]  au:{q}:dead       KEYS[11] au:{q}:order
--   KEYS[5]  au:{q}:seq        KEYS[12] au:{q}:ready:  (prefix: .. priority)
--   KEYS[6]  au:{q}:rescue     KEYS[13] au:{q}:batches
--   KEYS[7]  au:{q}:body       KEYS[14] au:{q}:batch:  (prefix: .. token)
--   KEYS[15] au:{q}:wakelist   KEYS[16] au:{q}:paused
--   KEYS[17] au:{q}:stats      KEYS[18] au:{q}:story
--   KEYS[19] au:{q}:waiting    KEYS[20] au:{q}:need:   (prefix: .. id)
--   KEYS[21] au:{q}:rdeps:  (prefix: .. id)            KEYS[22] au:{q}:parents
-- The flows' helpers (unwait, settled, unneed) also reach the keys of
-- other queues, by name (qkey): a computation may wait for one of another
-- queue. No Redis Cluster, then; a single server runs them as they are.
-- ARGV[1] is, for every script, the most wake tokens one call pushes and
-- the length the wake list is trimmed to; the rest of ARGV is each
-- script's own.
--
-- Helpers:
--   clock()          Redis' TIME in unix ms
--   count(v)         a count written by hand (up to 9 digits), or nil
--   bounded(v, lo, hi) an integer in lo..hi, or nil
--   meta(body)       priority, max_attempts of a computation (0, 1 when
--                    the body does not decode or they are out of range)
--   attempts(token)  the attempt count a lease token "<a>-<hex>" carries
--   is_id(s)         whether s is 32 lowercase hex digits
--   cut(s)           s quoted for a message, cut after 64 bytes
--   seq(n)           takes n numbers of au:{q}:seq, returns the one before
--   entry(id, a)     a ready-list entry: "<id>", or "<id> <a>" after a > 0
--                    attempts
--   waiting(id)      the ready-list entry of id, with its attempts from att
--   lease_of(id)     the token id is leased under, or nil
--   add(groups, p, e) appends e to groups[p]
--   enqueue(groups)  RPUSHes each group to the ready list of its priority;
--                    returns how many
--   wake(n)          pushes a wake token per computation made ready (n, at
--                    most ARGV[1]): each wakes one idle worker blocked in
--                    BLPOP on the wake list
-- Flows (a computation waiting for others, its dependencies):
--   qname            the name of the queue of KEYS
--   qkey(q, name)    the key "au:{q}:name" of any queue q
--   unwait(w, wq, wakes)  waiting w of queue wq to ready (wakes[wq]
--                    counts it) or, by its run_at, to sched
--   wake_all(wakes)  wake(n) for each queue of wakes
--   settled(ids)     ids of this queue left it for good (ack, bury, cancel,
--                    empty, drop): each of their dependents waits for one
--                    less, and those that wait for none any more unwait
--   unneed(w)        waiting w of this queue goes: its dependencies forget it

local kprios, ksched, kleased, kdead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local kseq, krescue, kbody, katt = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local ktok, kerr, korder, kready = KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local kbatches, kbatch, kwake = KEYS[13], KEYS[14], KEYS[15]
local kpaused, kstats, kstory = KEYS[16], KEYS[17], KEYS[18]
local kwaiting, kneed, krdeps, kparents = KEYS[19], KEYS[20], KEYS[21], KEYS[22]
local function clock()
  local t = redis.call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000)
end
-- a count written by hand: up to 9 digits, else nil
local function count(v)
  if type(v) == 'string' and #v < 10 and string.find(v, '^%d+$') then return tonumber(v) end
end
-- a number from a body or a field written by hand: an integer in lo..hi, else nil
local function bounded(v, lo, hi)
  v = tonumber(v)
  if v and v >= lo and v <= hi and v == math.floor(v) then return v end
end
local function meta(body)
  local ok, c = pcall(cmsgpack.unpack, body or '')
  if ok and type(c) == 'table' then
    return bounded(c.priority, -100, 100) or 0, bounded(c.max_attempts, 1, 1000) or 1
  end
  return 0, 1
end
local function attempts(token)
  return count(string.match(token or '', '^(%d+)-'))
end
local function entry(id, a)
  if a and a > 0 then return id .. ' ' .. a end
  return id
end
local function waiting(id)
  return entry(id, count(redis.call('HGET', katt, id)))
end
local function is_id(s)
  return #s == 32 and not string.find(s, '[^0-9a-f]')
end
-- s quoted for a message: at most 64 bytes of it, then an ellipsis
local function cut(s)
  if #s <= 64 then return "'" .. s .. "'" end
  return "'" .. string.sub(s, 1, 64) .. "\226\128\166'"
end
-- n numbers of au:{q}:seq, the first returned: a counter that is no
-- longer one (set by hand, at its end) starts again at 0
local function seq_of(k, n)
  local v = redis.pcall('INCRBY', k, n)
  if type(v) ~= 'number' then
    redis.call('SET', k, n)
    v = n
  end
  return v - n
end
local function seq(n)
  return seq_of(kseq, n)
end
local function lease_of(id)
  local token = redis.call('HGET', ktok, id)
  if token then return token end
  for _, b in ipairs(redis.call('ZRANGE', kbatches, 0, -1)) do
    if redis.call('SISMEMBER', kbatch .. b, id) == 1 then return b end
  end
end
local function add(groups, p, e)
  local g = groups[p]
  if not g then
    g = {}
    groups[p] = g
  end
  g[#g + 1] = e
end
local function enqueue(groups)
  local n = 0
  for p, es in pairs(groups) do
    redis.call('RPUSH', kready .. p, unpack(es))
    redis.call('ZADD', kprios, -p, p)
    n = n + #es
  end
  return n
end
local function wake_of(k, n)
  local cap = tonumber(ARGV[1])
  if n > cap then n = cap end
  if n < 1 then return end
  local t = {}
  for i = 1, n do t[i] = '1' end
  -- nobody waiting: the tokens stay, up to cap
  if redis.call('LPUSH', k, unpack(t)) > cap then redis.call('LTRIM', k, 0, cap - 1) end
end
local function wake(n)
  wake_of(kwake, n)
end

-- flows. A waiting computation w of queue wq: in au:{wq}:waiting (w ->
-- its run_at, 0 for none) with au:{wq}:need:<w>, the set of "<dep> <its
-- queue>" it still waits for; each dependency d of queue dq has
-- au:{dq}:rdeps:<d>, the set of "<w> <wq>" waiting for it, and is in
-- au:{dq}:parents, so that a settle of ids with no dependents costs one
-- EXISTS. The two sets are kept in step: a member of one has its mirror
-- in the other.
local qname = kprios and string.sub(kprios, 5, -8)
local function qkey(q, name)
  return 'au:{' .. q .. '}:' .. name
end
local function unwait(w, wq, wakes)
  local kw = qkey(wq, 'waiting')
  local at = redis.call('HGET', kw, w)
  if not at then return end
  redis.call('HDEL', kw, w)
  local p = meta(redis.call('HGET', qkey(wq, 'body'), w))
  at = tonumber(at) or 0
  if at > 0 and at > clock() then
    redis.call('ZADD', qkey(wq, 'sched'), at, w)
    redis.call('HSET', qkey(wq, 'order'), w, p .. ' ' .. (seq_of(qkey(wq, 'seq'), 1) + 1))
  else
    redis.call('RPUSH', qkey(wq, 'ready:') .. p, w)
    redis.call('ZADD', qkey(wq, 'prios'), -p, p)
    wakes[wq] = (wakes[wq] or 0) + 1
  end
end
local function wake_all(wakes)
  for wq, n in pairs(wakes) do wake_of(qkey(wq, 'wakelist'), n) end
end
local function settled(ids)
  if #ids == 0 or redis.call('EXISTS', kparents) == 0 then return end
  local wakes = {}
  for at = 1, #ids, 1000 do
    local part, gone = {unpack(ids, at, math.min(at + 999, #ids))}, {}
    local m = redis.call('SMISMEMBER', kparents, unpack(part))
    for i, d in ipairs(part) do
      if m[i] == 1 then gone[#gone + 1] = d end
    end
    if #gone > 0 then redis.call('SREM', kparents, unpack(gone)) end
    for _, d in ipairs(gone) do
      local kr, me = krdeps .. d, d .. ' ' .. qname
      for _, e in ipairs(redis.call('SMEMBERS', kr)) do
        local w, wq = string.sub(e, 1, 32), string.sub(e, 34)
        local kn = qkey(wq, 'need:') .. w
        if redis.call('SREM', kn, me) == 1 and redis.call('EXISTS', kn) == 0 then
          unwait(w, wq, wakes)
        end
      end
      redis.call('DEL', kr)
    end
  end
  wake_all(wakes)
end
local function unneed(w)
  local kn, me = kneed .. w, w .. ' ' .. qname
  for _, e in ipairs(redis.call('SMEMBERS', kn)) do
    local d, dq = string.sub(e, 1, 32), string.sub(e, 34)
    local kr = qkey(dq, 'rdeps:') .. d
    if redis.call('SREM', kr, me) == 1 and redis.call('EXISTS', kr) == 0 then
      redis.call('SREM', qkey(dq, 'parents'), d)
    end
  end
  redis.call('DEL', kn)
  redis.call('HDEL', kwaiting, w)
end
