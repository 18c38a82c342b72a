-- lease.lua - leases up to max ready computations, highest priority first.
--
-- KEYS, ARGV[1]: the queue's keys and wake channel (prelude.lua)
-- ARGV[2]  max
-- ARGV[3]  lease ms
-- ARGV[4]  random hex for the tokens ("<attempt>-<hex>")
--
-- Due scheduled ones (up to 1000, in run_at then push order) become ready
-- first. Returns {dropped, ms until the next scheduled one or -1 (only when
-- nothing was popped)}, then when some were: {ids}, {attempts} ({} when all
-- are first attempts) and, for up to 16 ids, {bodies}. For more, the caller
-- reads the bodies with HMGET; it drops the ids without one. An entry that
-- is no id is dropped here, and buried if it has a body.

local max, now = tonumber(ARGV[2]), clock()
local due = redis.call('ZRANGEBYSCORE', ksched, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1000)
if #due > 0 then
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
  enqueue(groups)
end
local ids, got = {}, 0
while got < max do
  local top = redis.call('ZRANGE', kprios, 0, 0)[1]
  if not top then break end
  local part = redis.call('LPOP', kready .. top, max - got)
  if not part or #part < max - got then redis.call('ZREM', kprios, top) end
  if part and got == 0 then
    ids, got = part, #part
  elseif part then
    for i = 1, #part do ids[got + i] = part[i] end
    got = got + #part
  end
end
if got == 0 then
  local first = redis.call('ZRANGE', ksched, 0, 0, 'WITHSCORES')
  return {0, first[2] and math.max(tonumber(first[2]) - now, 0) or -1}
end
local deadline, hex = now + tonumber(ARGV[3]), ARGV[4]
if redis.call('EXISTS', kleased) == 0 then
  local pin = string.rep('~', 80)
  redis.call('ZADD', kleased, '+inf', pin)
  redis.call('HSET', ktok, pin, pin)
end
local plain = true
for i = 1, got do
  if #ids[i] ~= 32 then
    plain = false
    break
  end
end
if plain then
  redis.call('SADD', kbatch .. '1-' .. hex, unpack(ids))
  redis.call('ZADD', kbatches, deadline, '1-' .. hex)
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
  redis.call('SADD', kbatch .. a .. '-' .. hex, unpack(g))
  redis.call('ZADD', kbatches, deadline, a .. '-' .. hex)
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
