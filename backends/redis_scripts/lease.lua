-- lease.lua - leases up to max ready computations, highest priority first.
--
-- KEYS, ARGV[1]: the queue's keys and wake cap (prelude.lua)
-- ARGV[2]  max
-- ARGV[3]  lease ms
-- ARGV[4]  random hex for the tokens ("<attempt>-<hex>-<count>")
--
-- Due scheduled ones (up to 1000, in run_at then push order) become ready
-- first; when this lease leaves some of them, it wakes as many idle workers.
-- Returns {dropped, buried, ms until the next scheduled one or -1 (only
-- when nothing was popped)}, then when some were: {ids}, {attempts} ({} when
-- all are first attempts) and, for up to 16 ids, {bodies}, then {stories}
-- when some are not first attempts (false for an id without one). For
-- more, the caller reads the bodies (and those stories) with HMGET. A
-- lease of first attempts only never looks at story. Malformed entries are dealt with
-- below (buried: dead-lettered with a reason; dropped: removed, having no
-- id to file them under); the caller dead-letters the ids it finds without
-- a body or not in lowercase hex. The token of a batch ends in its size, so
-- the write that empties it knows without asking. Nothing scheduled and
-- nothing ready costs one EXISTS, which counts a key once per mention: 2
-- for sched, 1 for prios, 4 for paused (a paused queue leases nothing, for
-- the same one command).

local max, now, moved = tonumber(ARGV[2]), nil, 0
local has = redis.call('EXISTS', kpaused, kpaused, kpaused, kpaused, ksched, ksched, kprios)
if has == 0 or has >= 4 then return {0, 0, -1} end
local first = has >= 2 and redis.call('ZRANGE', ksched, 0, 0, 'WITHSCORES')[2]
first = first and (tonumber(first) or 0)
if first then now = clock() end
if first and first <= now then
  local due = redis.call('ZRANGEBYSCORE', ksched, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1000)
  local ids, at, pr, sq, na, groups = {}, {}, {}, {}, {}, {}
  for i = 1, #due, 2 do
    ids[#ids + 1] = due[i]
    at[due[i]] = tonumber(due[i + 1])
  end
  local ord, att = redis.call('HMGET', korder, unpack(ids)), {}
  if redis.call('EXISTS', katt) == 1 then att = redis.call('HMGET', katt, unpack(ids)) end
  for i, id in ipairs(ids) do
    local p, s = string.match(ord[i] or '', '^(%-?%d+) (%d+)$')
    pr[id], sq[id], na[id] = bounded(p, -100, 100) or 0, tonumber(s) or 0, count(att[i])
  end
  table.sort(ids, function(a, b)
    if at[a] ~= at[b] then return at[a] < at[b] end
    return sq[a] < sq[b]
  end)
  for _, id in ipairs(ids) do add(groups, pr[id], entry(id, na[id])) end
  redis.call('ZREM', ksched, unpack(ids))
  redis.call('HDEL', korder, unpack(ids))
  moved = enqueue(groups)
end
local ids, got = {}, 0
for _, top in ipairs((has % 2 == 1 or moved > 0) and redis.call('ZRANGE', kprios, 0, -1) or {}) do
  local part = redis.pcall('LPOP', kready .. top, max - got)
  -- a key of another type where a ready list belongs (by hand) is passed by
  if type(part) == 'table' and part.err then part = nil end
  if not part or #part < max - got then redis.call('ZREM', kprios, top) end
  if part and got == 0 then
    ids, got = part, #part
  elseif part then
    for i = 1, #part do ids[got + i] = part[i] end
    got = got + #part
  end
  if got >= max then break end
end
if got == 0 then
  -- a score of +inf (by hand) is never due: a day is as good
  return {0, 0, first and math.min(math.max(first - now, 0), 86400000) or -1}
end
-- a lease that took fewer than max emptied every ready list
if moved > 0 and got >= max then wake(moved) end
now = now or clock()
local deadline, hex = now + tonumber(ARGV[3]), ARGV[4]
local plain = true
for i = 1, got do
  if #ids[i] ~= 32 then
    plain = false
    break
  end
end
if plain then
  local token = '1-' .. hex .. '-' .. got
  redis.call('SADD', kbatch .. token, unpack(ids))
  redis.call('ZADD', kbatches, deadline, token)
  return {0, 0, -1, ids, {}, got <= 16 and redis.call('HMGET', kbody, unpack(ids)) or nil}
end
-- a retry's "<id> <a>", or an entry written by hand: each one that is not
-- "<id>" or "<id> <a>" with a count of up to 9 digits is malformed, and
-- dead-lettered with the reason under its first word when that is an id
-- or has a body; the rest (no id to file them under) are
-- removed and counted. libau checks the ids it gets (lowercase hex, a body).
local oid, oatt, groups, bad, keys, later = {}, {}, {}, {}, {}, false
for _, e in ipairs(ids) do
  local id, a = e, 1
  if #e ~= 32 then
    local n
    id, n = string.match(e, '^(%S+) (%d+)$')
    if id and #id == 32 and #n < 10 then
      a = tonumber(n) + 1
    else
      id = nil
      bad[#bad + 1], keys[#keys + 1] = e, string.match(e, '^[^ ]*')
    end
  end
  if id then
    oid[#oid + 1], oatt[#oatt + 1] = id, a
    add(groups, a, id)
    if a > 1 then later = true end
  end
end
for a, g in pairs(groups) do
  local token = a .. '-' .. hex .. '-' .. #g
  redis.call('SADD', kbatch .. token, unpack(g))
  redis.call('ZADD', kbatches, deadline, token)
end
local dropped, buried = 0, 0
if #bad > 0 then
  local bodies, dead, why = redis.call('HMGET', kbody, unpack(keys)), {}, {}
  for i, e in ipairs(bad) do
    local k = keys[i]
    if bodies[i] or is_id(k) then
      local what = 'not an id'
      if is_id(k) then
        what = string.find(e, '^ %d+$', 33) and 'attempts out of range' or 'attempts not a number'
      end
      dead[#dead + 1], dead[#dead + 2] = now, k
      why[#why + 1], why[#why + 2] = k, 'malformed ready entry ' .. cut(e) .. ': ' .. what
      buried = buried + 1
    else
      dropped = dropped + 1
    end
  end
  if #dead > 0 then
    redis.call('ZADD', kdead, unpack(dead))
    redis.call('HSET', kerr, unpack(why))
  end
end
if #oid == 0 or #oid > 16 then return {dropped, buried, -1, oid, oatt} end
local bodies = redis.call('HMGET', kbody, unpack(oid))
if not later then return {dropped, buried, -1, oid, oatt, bodies} end
return {dropped, buried, -1, oid, oatt, bodies, redis.call('HMGET', kstory, unpack(oid))}
