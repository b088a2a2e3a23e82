-- One less connection of a user in a presence channel, held by this node.
-- KEYS[1]: hash user -> connections in the channel, cluster-wide (P:{A}:pc:CHANNEL)
-- KEYS[2]: hash user -> member JSON (P:{A}:pm:CHANNEL)
-- KEYS[3]: hash presence field -> connections held by this node (P:{A}:presn:NODE)
-- KEYS[4]: the app's stamp clock (P:{A}:clock)
-- KEYS[5]: the stamp of this user's last removal from the channel (P:{A}:mleft:FIELD)
-- ARGV[1]: presence field, ARGV[2]: user key, ARGV[3]: clock lifetime ms,
-- ARGV[4]: how long a removal is remembered, ms
-- Returns the stamp of the member's removal when that was the user's last connection in the
-- channel, else 0.
local n = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if n <= 0 then return 0 end
if n == 1 then redis.call('HDEL', KEYS[3], ARGV[1]) else redis.call('HINCRBY', KEYS[3], ARGV[1], -1) end
local c = redis.call('HINCRBY', KEYS[1], ARGV[2], -1)
if c > 0 then return 0 end
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[2])
local t = redis.call('TIME')
local s = math.max(t[1] * 1000000 + t[2], (tonumber(redis.call('GET', KEYS[4])) or 0) + 1)
redis.call('SET', KEYS[4], string.format('%.0f', s), 'PX', ARGV[3])
redis.call('SET', KEYS[5], string.format('%.0f', s), 'PX', ARGV[4])
return s
