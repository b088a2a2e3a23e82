-- Keep an event in its channel's history and publish it, as one step (docs/history.md).
-- KEYS[1]: the channel's history stream (PREFIX:hist:{TOPIC}, in the topic's cluster slot)
-- ARGV[1]: the channel's bus topic (TOPIC), ARGV[2]: events kept, ARGV[3]: TTL in milliseconds,
-- ARGV[4]: epoch for a history that does not exist yet, ARGV[5]: the envelope without its position
-- (msgpack; appending the packed position completes it), ARGV[6]: '1' to SPUBLISH (Redis Cluster)
-- KEYS[2], ARGV[7] (single Redis, the HTTP API's publishes): a guard key (PREFIX:boot) and the value it
-- must hold; when it doesn't (Redis restarted, shared/bus/base.py PublishGuard), nothing is kept or
-- published and the script returns false
-- Stream ids are the positions: "<epoch>-<offset>", the epoch kept from the latest entry.
-- Returns the event's position.
if KEYS[2] and redis.call('GET', KEYS[2]) ~= ARGV[7] then return false end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local id
if last[1] then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], string.match(last[1][1], '^%d+') .. '-*', 'e', ARGV[5])
else
  id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], ARGV[4] .. '-1', 'e', ARGV[5])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local message = ARGV[5] .. cmsgpack.pack(id)
if ARGV[6] == '1' then
  redis.call('SPUBLISH', ARGV[1], message)
else
  redis.call('PUBLISH', ARGV[1], message)
end
return id
