-- One more connection of a user in a presence channel, unless the channel is full for a new user.
-- KEYS[1]: hash user -> connections in the channel, cluster-wide (P:{A}:pc:CHANNEL)
-- KEYS[2]: hash user -> member JSON [user_id, user_info] (P:{A}:pm:CHANNEL)
-- KEYS[3]: hash "CHANNEL\nUSER" -> connections held by this node (P:{A}:presn:NODE)
-- ARGV[1]: channel, ARGV[2]: user key, ARGV[3]: member JSON, ARGV[4]: max members
-- Returns {accepted 0/1, added 0/1, roster as a list of member JSON}.
local field = ARGV[1] .. '\n' .. ARGV[2]
local added = 0
if not redis.call('HGET', KEYS[1], ARGV[2]) then
  if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return {0, 0, {}} end
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  added = 1
end
redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
redis.call('HINCRBY', KEYS[3], field, 1)
return {1, added, redis.call('HVALS', KEYS[2])}
