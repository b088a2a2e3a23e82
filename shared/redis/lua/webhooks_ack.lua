-- Delete jobs (delivered, or given up on).
-- KEYS[1]: sorted set job -> due time in ms (P:{A}:wh:due)
-- KEYS[2]: hash job -> job JSON (P:{A}:wh:jobs)
-- KEYS[3]: hash job -> attempts so far (P:{A}:wh:tries)
-- KEYS[4]: hash cancel key -> pending delayed job (P:{A}:wh:cancel)
-- KEYS[5]: hash delayed job -> its cancel key (P:{A}:wh:ckey)
-- ARGV: job ids
-- Returns the number of ids.
for _, id in ipairs(ARGV) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  local k = redis.call('HGET', KEYS[5], id)
  if k then
    redis.call('HDEL', KEYS[5], id)
    if redis.call('HGET', KEYS[4], k) == id then redis.call('HDEL', KEYS[4], k) end
  end
end
return #ARGV
