-- lease.lua - leases up to max ready computations, highest priority first.
--
-- KEYS, ARGV[1]: the queue's keys and wake cap (prelude.lua)
-- ARGV[2]  max
-- ARGV[3]  lease ms
-- ARGV[4]  random hex for the tokens ("<attempt>-<hex>-<count>")
--
-- Due scheduled ones (up to 1000, in run_at then push order) become ready
-- first; when this lease leaves some of them, it wakes as many idle workers.
-- Returns {dropped, ms until the next scheduled one or -1 (only when
-- nothing was popped)}, then when some were: {ids}, {attempts} ({} when all
-- are first attempts) and, for up to 16 ids, {bodies}. For more, the caller
-- reads the bodies with HMGET; it drops the ids without one. An entry that
-- is no id is dropped here, and buried if it has a body. The token of a
-- batch ends in its size, so the write that empties it knows without
-- asking. Nothing scheduled and nothing ready costs one EXISTS, which
-- counts a key once per mention: 2 for sched, 1 for prios, 4 for paused
-- (a paused queue leases nothing, for the same one command).

local max, now, moved = tonumber(ARGV[2]), nil, 0
local has = redis.call('EXISTS', kpaused, kpaused, kpaused, kpaused, ksched, ksched, kprios)
if has == 0 or has >= 4 then return {0, -1} end
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
    pr[id], sq[id], na[id] = tonumber(p) or 0, tonumber(s) or 0, tonumber(att[i] or '')
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
  local part = redis.call('LPOP', kready .. top, max - got)
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
  return {0, first and math.max(first - now, 0) or -1}
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
  return {0, -1, ids, {}, got <= 16 and redis.call('HMGET', kbody, unpack(ids)) or nil}
end
local oid, oatt, groups, bad = {}, {}, {}, {}
for _, e in ipairs(ids) do
  local id, a = string.match(e, '^(%x+) (%d+)$')
  if #e == 32 then
    id, a = e, 1
  elseif id and #id == 32 and #a < 10 then
    a = tonumber(a) + 1
  else
    id, bad[#bad + 1] = nil, e
  end
  if id then
    oid[#oid + 1], oatt[#oatt + 1] = id, a
    add(groups, a, id)
  end
end
for a, g in pairs(groups) do
  local token = a .. '-' .. hex .. '-' .. #g
  redis.call('SADD', kbatch .. token, unpack(g))
  redis.call('ZADD', kbatches, deadline, token)
end
if #bad > 0 then
  local bodies, dead, why = redis.call('HMGET', kbody, unpack(bad)), {}, {}
  for i, e in ipairs(bad) do
    if bodies[i] then
      dead[#dead + 1], dead[#dead + 2] = now, e
      why[#why + 1], why[#why + 2] = e, 'invalid id'
    end
  end
  if #dead > 0 then
    redis.call('ZADD', kdead, unpack(dead))
    redis.call('HSET', kerr, unpack(why))
  end
end
return {#bad, -1, oid, oatt, #oid > 0 and #oid <= 16 and redis.call('HMGET', kbody, unpack(oid)) or nil}
