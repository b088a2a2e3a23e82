-- One more connection of a user in a presence channel, unless the channel is full for a new user.
-- KEYS[1]: hash user -> connections in the channel, cluster-wide (P:{A}:pc:CHANNEL)
-- KEYS[2]: hash user -> member JSON [user_id, user_info] (P:{A}:pm:CHANNEL)
-- KEYS[3]: hash presence field -> connections held by this node (P:{A}:presn:NODE)
-- KEYS[4]: the app's stamp clock (P:{A}:clock)
-- KEYS[5]: the stamp of this user's recent removal from the channel, if any (P:{A}:mleft:FIELD)
-- ARGV[1]: presence field (channel and user, length-prefixed: shared/state/redis_node.py
--          presence_field), ARGV[2]: user key, ARGV[3]: member JSON, ARGV[4]: max members,
-- ARGV[5]: clock lifetime ms
-- Returns {accepted 0/1, added 0/1, roster as a list of member JSON, stamp, after}: the roster
-- reflects every transition stamped before `stamp` (the stamp of the addition when added); `after`
-- is the stamp of the removal this addition follows (0: none recent).
local function next_stamp()
  local t = redis.call('TIME')
  local s = math.max(t[1] * 1000000 + t[2], (tonumber(redis.call('GET', KEYS[4])) or 0) + 1)
  redis.call('SET', KEYS[4], string.format('%.0f', s), 'PX', ARGV[5])
  return s
end

local added, after = 0, 0
if not redis.call('HGET', KEYS[1], ARGV[2]) then
  if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return {0, 0, {}, 0, 0} end
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  added = 1
  after = tonumber(redis.call('GET', KEYS[5])) or 0
  redis.call('DEL', KEYS[5])
end
redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
return {1, added, redis.call('HVALS', KEYS[2]), next_stamp(), after}
