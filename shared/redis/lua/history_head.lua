-- A channel's latest position; a channel without history gets an empty one under a new epoch.
-- KEYS[1]: the channel's history stream (PREFIX:hist:{TOPIC})
-- ARGV[1]: epoch for a history that does not exist yet, ARGV[2]: TTL in milliseconds
-- The empty history holds one marker entry "<epoch>-0" with an empty envelope, so that the epoch is
-- kept (a stream's last id is read from its last entry); readers skip it.
-- Returns the position.
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if last[1] then
  return last[1][1]
end
local id = ARGV[1] .. '-0'
redis.call('XADD', KEYS[1], id, 'e', '')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return id
