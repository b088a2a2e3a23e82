-- Publish envelopes only if Redis is still the boot the caller knows the cluster is synced to, in
-- one atomic step (shared/bus/base.py PublishGuard).
-- KEYS[1]: the guard key (P:boot)
-- ARGV[1]: the value it must hold, then pairs of (topic, payload)
-- Returns -1 (nothing published) when the guard fails, else the number of receiving connections.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local receivers = 0
for i = 2, #ARGV, 2 do receivers = receivers + redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end
return receivers
