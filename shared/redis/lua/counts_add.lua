-- One more of ARGV[1] (a channel's subscriptions, or a user's signed-in sockets) held by this node.
-- KEYS[1]: hash name -> cluster total (P:{A}:occ or P:{A}:uc)
-- KEYS[2]: hash name -> this node's share (P:{A}:occn:NODE or P:{A}:ucn:NODE)
-- KEYS[3], KEYS[4] (channels only): the app's stamp clock (P:{A}:clock) and the stamp of the
-- channel's recent vacate, if any (P:{A}:left:CHANNEL)
-- ARGV[1]: the name (channel or user id), ARGV[2] (channels only): clock lifetime ms
-- Returns {new cluster total, stamp, after}: with KEYS[3], a total of 1 (occupied) is stamped and
-- `after` is the stamp of the vacate it follows (0: none recent); otherwise both are 0.
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
local total = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if total ~= 1 or not KEYS[3] then return {total, 0, 0} end
local t = redis.call('TIME')
local s = math.max(t[1] * 1000000 + t[2], (tonumber(redis.call('GET', KEYS[3])) or 0) + 1)
redis.call('SET', KEYS[3], string.format('%.0f', s), 'PX', ARGV[2])
local after = tonumber(redis.call('GET', KEYS[4])) or 0
redis.call('DEL', KEYS[4])
return {total, s, after}
