-- One less of ARGV[1] held by this node; nothing when this node holds none (already reaped or synced).
-- KEYS[1]: hash name -> cluster total
-- KEYS[2]: hash name -> this node's share
-- ARGV[1]: the name (channel or user id)
-- Returns {1, new total}, or {0, current total} when this node held no such record.
local n = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if n <= 0 then return {0, tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')} end
if n == 1 then redis.call('HDEL', KEYS[2], ARGV[1]) else redis.call('HINCRBY', KEYS[2], ARGV[1], -1) end
local t = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if t <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) return {1, 0} end
return {1, t}
