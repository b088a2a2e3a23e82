-- The identity of this Redis's life: created by the first node to find it missing (after a start or
-- a restart that lost every key), read by every node (shared/state/redis_node.py, "Redis restarts").
-- KEYS[1]: the boot id (P:boot)
-- KEYS[2]: "created ms:restart flag" of the boot (P:boot:meta)
-- ARGV[1]: a new random id, ARGV[2]: 1 when the caller had synced to an earlier boot (so this one
--          is a restart, and other nodes get a grace period to notice it), else 0
-- Returns the current boot id.
local boot = redis.call('GET', KEYS[1])
if boot then
  if ARGV[2] == '1' then
    local meta = redis.call('GET', KEYS[2])
    if meta and string.sub(meta, -2) == ':0' then
      redis.call('SET', KEYS[2], string.sub(meta, 1, -2) .. '1')
    end
  end
  return boot
end
local t = redis.call('TIME')
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], string.format('%.0f', t[1] * 1000 + math.floor(t[2] / 1000)) .. ':' .. ARGV[2])
return ARGV[1]
