-- One more of ARGV[1] (a channel's subscriptions, or a user's signed-in sockets) held by this node.
-- KEYS[1]: hash name -> cluster total (P:{A}:occ or P:{A}:uc)
-- KEYS[2]: hash name -> this node's share (P:{A}:occn:NODE or P:{A}:ucn:NODE)
-- ARGV[1]: the name (channel or user id)
-- Returns the new cluster total.
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
