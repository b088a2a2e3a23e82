-- Whether the cluster is synced to the current boot of Redis: every node with a live lease has
-- re-subscribed its topics and re-synced its records on it, and, after a restart, the grace period
-- in which a live node may not have noticed yet has passed.
-- KEYS[1]: the boot id (P:boot), KEYS[2]: its "created ms:restart flag" (P:boot:meta)
-- KEYS[3]: sorted set node -> lease expiry ms (P:nodes)
-- KEYS[4]: hash node -> the boot it is synced to (P:synced)
-- ARGV[1]: now ms (the caller's clock, as for leases), ARGV[2]: grace ms
-- Returns {boot id or false, 1 when synced else 0}.
local boot = redis.call('GET', KEYS[1])
if not boot then return {false, 0} end
local meta = redis.call('GET', KEYS[2]) or '0:0'
local colon = string.find(meta, ':', 1, true)
local created, restart = tonumber(string.sub(meta, 1, colon - 1)), string.sub(meta, colon + 1)
if restart == '1' then
  local t = redis.call('TIME')
  if t[1] * 1000 + math.floor(t[2] / 1000) - created < tonumber(ARGV[2]) then return {boot, 0} end
end
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. ARGV[1], '+inf')) do
  if redis.call('HGET', KEYS[4], node) ~= boot then return {boot, 0} end
end
return {boot, 1}
