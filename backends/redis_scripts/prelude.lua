-- prelude.lua - the start of every script of the Redis queue: its keys as
-- locals and the helpers the scripts share. redis_queue.c sends each script
-- as this text followed by the script's own file.
--
-- KEYS (the same 18 for every script, in this order: key_names in
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

local kprios, ksched, kleased, kdead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local kseq, krescue, kbody, katt = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local ktok, kerr, korder, kready = KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local kbatches, kbatch, kwake = KEYS[13], KEYS[14], KEYS[15]
local kpaused, kstats, kstory = KEYS[16], KEYS[17], KEYS[18]
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
local function seq(n)
  local v = redis.pcall('INCRBY', kseq, n)
  if type(v) ~= 'number' then
    redis.call('SET', kseq, n)
    v = n
  end
  return v - n
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
local function wake(n)
  local cap = tonumber(ARGV[1])
  if n > cap then n = cap end
  if n < 1 then return end
  local t = {}
  for i = 1, n do t[i] = '1' end
  -- nobody waiting: the tokens stay, up to cap
  if redis.call('LPUSH', kwake, unpack(t)) > cap then redis.call('LTRIM', kwake, 0, cap - 1) end
end
