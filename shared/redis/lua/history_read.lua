-- A channel's latest position and some of its events, read as one snapshot.
-- KEYS[1]: the channel's history stream (PREFIX:hist:{TOPIC})
-- ARGV[1]: a position to read after (exclusive), or '' for the latest events; ARGV[2]: at most this many
-- Returns {latest position or false, entries}: entries as XRANGE gives them (id, {'e', envelope}),
-- oldest first after a position, newest first for the latest.
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if not last[1] then
  return {false, {}}
end
if ARGV[1] == '' then
  return {last[1][1], redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[2])}
end
return {last[1][1], redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])}
