-- Count a new connection on this node unless the app's cluster-wide limit is reached.
-- KEYS[1]: hash node -> open connections of the app (P:{A}:conns)
-- ARGV[1]: this node's id, ARGV[2]: limit (-1: none)
-- Returns 1 when counted, 0 when refused.
local limit = tonumber(ARGV[2])
if limit >= 0 then
  local total = 0
  for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(v) end
  if total >= limit then return 0 end
end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return 1
