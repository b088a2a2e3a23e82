-- Take due jobs, making each due again a visibility timeout later (re-delivered if its claimer dies),
-- and end the cancellability of the delayed ones.
-- KEYS[1]: sorted set job -> due time in ms (P:{A}:wh:due)
-- KEYS[2]: hash job -> job JSON (P:{A}:wh:jobs)
-- KEYS[3]: hash cancel key -> pending delayed job (P:{A}:wh:cancel)
-- KEYS[4]: hash delayed job -> its cancel key (P:{A}:wh:ckey)
-- KEYS[5]: hash job -> attempts so far (P:{A}:wh:tries)
-- ARGV[1]: now ms, ARGV[2]: visibility ms, ARGV[3]: limit
-- Returns {{id, job, attempts, ...}, earliest due time left or false}.
local now = tonumber(ARGV[1])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local job = redis.call('HGET', KEYS[2], id)
  if job then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
    local k = redis.call('HGET', KEYS[4], id)
    if k then
      redis.call('HDEL', KEYS[4], id)
      if redis.call('HGET', KEYS[3], k) == id then redis.call('HDEL', KEYS[3], k) end
    end
    table.insert(out, id)
    table.insert(out, job)
    table.insert(out, redis.call('HINCRBY', KEYS[5], id, 1))
  else
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[5], id)
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {out, first[2] or false}
