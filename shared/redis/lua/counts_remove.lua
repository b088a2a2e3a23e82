-- One less of ARGV[1] held by this node; nothing when this node holds none (already reaped or synced).
-- KEYS[1]: hash name -> cluster total
-- KEYS[2]: hash name -> this node's share
-- KEYS[3], KEYS[4] (channels only): the app's stamp clock (P:{A}:clock) and where the channel's
-- vacate is remembered (P:{A}:left:CHANNEL)
-- ARGV[1]: the name (channel or user id), ARGV[2], ARGV[3] (channels only): clock lifetime and how
-- long a vacate is remembered, ms
-- Returns {1, new total, stamp}, or {0, current total, 0} when this node held no such record; with
-- KEYS[3], a total of 0 (vacated) is stamped.
local n = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if n <= 0 then return {0, tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0'), 0} end
if n == 1 then redis.call('HDEL', KEYS[2], ARGV[1]) else redis.call('HINCRBY', KEYS[2], ARGV[1], -1) end
local t = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if t > 0 then return {1, t, 0} end
redis.call('HDEL', KEYS[1], ARGV[1])
if not KEYS[3] then return {1, 0, 0} end
local now = redis.call('TIME')
local s = math.max(now[1] * 1000000 + now[2], (tonumber(redis.call('GET', KEYS[3])) or 0) + 1)
redis.call('SET', KEYS[3], string.format('%.0f', s), 'PX', ARGV[2])
redis.call('SET', KEYS[4], string.format('%.0f', s), 'PX', ARGV[3])
return {1, 0, s}
