-- kv.lua - the key-value space (queue.h, kv_put ... kv_keys). Sent without
-- the prelude: keys of its own.
--
-- KEYS[1]  au:kv:<ns>:<key>   STRING the value, PEXPIRE'd by a ttl
--                             (keys: the prefix au:kv:<ns>:)
-- KEYS[2]  au:kv:<ns>         ZSET the namespace's keys, all at score 0 (so
--                             that ZRANGEBYLEX finds those of a prefix)
-- ARGV[1]  mode, then its own arguments:
--   put value ttl_ms nx -> 1 written, 0 (nx) the key was there
--   del [expect]        -> 1 deleted, 0 absent (or its value was not expect)
--   keys prefix max     -> the live keys of ns starting with prefix, at most
--                          max (0: all), in byte order
-- The index names a key from its put to its del; one that expired stays in
-- it until a keys call finds its value gone (EXISTS) and drops it, so keys
-- lists only live ones.

local mode, kval, kidx = ARGV[1], KEYS[1], KEYS[2]
local function name(k)
  return string.sub(k, #kidx + 2)
end

if mode == 'put' then
  local ttl, args = tonumber(ARGV[3]), {'SET', kval, ARGV[2]}
  if ttl > 0 then args[#args + 1], args[#args + 2] = 'PX', ttl end
  if ARGV[4] == '1' then args[#args + 1] = 'NX' end
  if not redis.call(unpack(args)) then return 0 end
  redis.call('ZADD', kidx, 0, name(kval))
  return 1
elseif mode == 'del' then
  if ARGV[2] and redis.call('GET', kval) ~= ARGV[2] then return 0 end
  redis.call('ZREM', kidx, name(kval))
  return redis.call('DEL', kval)
elseif mode == 'keys' then
  local prefix, max, out, gone, at = ARGV[2], tonumber(ARGV[3]), {}, {}, 0
  local lo, hi = '-', '+'
  if prefix ~= '' then lo, hi = '[' .. prefix, '(' .. prefix .. '\255' end
  while max == 0 or #out < max do
    local part = redis.call('ZRANGEBYLEX', kidx, lo, hi, 'LIMIT', at, 1000)
    for _, k in ipairs(part) do
      if max > 0 and #out == max then break end
      if redis.call('EXISTS', kval .. k) == 1 then
        out[#out + 1] = k
      else
        gone[#gone + 1] = k
      end
    end
    if #part < 1000 then break end
    at = at + 1000
  end
  for i = 1, #gone, 1000 do
    redis.call('ZREM', kidx, unpack(gone, i, math.min(i + 999, #gone)))
  end
  return out
end
return redis.error_reply('unknown mode ' .. tostring(mode))
