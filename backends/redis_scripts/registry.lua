-- registry.lua - the worker registry (sent on its own, without prelude.lua).
-- KEYS[1] au:registry:{workers} (ZSET id -> last beat, unix ms), KEYS[2]
-- the entry au:registry:{workers}:<id> (HASH), or for 'list' the prefix
-- of the entries. ARGV[1] is the operation:
--   beat TTL_MS ID FIELD VALUE...  -> 1 when a stop was asked for ID, else 0
--   list MAX                       -> { now, {field, value, ...}... }
--   stop ID                        -> 1, or 0 when ID has no live entry
--   gone ID                        -> 1
-- An entry lives TTL_MS after its last beat (PEXPIRE); the sorted set
-- forgets ids whose entry is gone when 'list' finds them so.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op = ARGV[1]
if op == 'beat' then
	local stop = redis.call('HGET', KEYS[2], 'stop')
	redis.call('HSET', KEYS[2], 'beat', now, unpack(ARGV, 4))
	redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]) or 6000)
	redis.call('ZADD', KEYS[1], now, ARGV[3])
	if stop then return 1 end
	return 0
elseif op == 'list' then
	local ids = redis.call('ZRANGE', KEYS[1], 0, (tonumber(ARGV[2]) or 10000) - 1)
	local out = { now }
	for _, id in ipairs(ids) do
		local h = redis.call('HGETALL', KEYS[2] .. id)
		if #h == 0 then
			redis.call('ZREM', KEYS[1], id)
		else
			out[#out + 1] = h
		end
	end
	return out
elseif op == 'stop' then
	if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
	redis.call('HSET', KEYS[2], 'stop', '1')
	return 1
elseif op == 'gone' then
	redis.call('DEL', KEYS[2])
	redis.call('ZREM', KEYS[1], ARGV[2])
	return 1
end
return redis.error_reply('registry.lua: unknown operation')
