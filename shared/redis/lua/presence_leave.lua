-- One less connection of a user in a presence channel, held by this node.
-- KEYS[1]: hash user -> connections in the channel, cluster-wide (P:{A}:pc:CHANNEL)
-- KEYS[2]: hash user -> member JSON (P:{A}:pm:CHANNEL)
-- KEYS[3]: hash "CHANNEL\nUSER" -> connections held by this node (P:{A}:presn:NODE)
-- ARGV[1]: channel, ARGV[2]: user key
-- Returns 1 when that was the user's last connection in the channel (member removed), else 0.
local field = ARGV[1] .. '\n' .. ARGV[2]
local n = tonumber(redis.call('HGET', KEYS[3], field) or '0')
if n <= 0 then return 0 end
if n == 1 then redis.call('HDEL', KEYS[3], field) else redis.call('HINCRBY', KEYS[3], field, -1) end
local c = redis.call('HINCRBY', KEYS[1], ARGV[2], -1)
if c <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('HDEL', KEYS[2], ARGV[2])
  return 1
end
return 0
