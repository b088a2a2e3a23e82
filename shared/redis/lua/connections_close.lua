-- Uncount a connection of this node.
-- KEYS[1]: hash node -> open connections of the app (P:{A}:conns)
-- ARGV[1]: this node's id
-- Returns the node's remaining count.
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return n
