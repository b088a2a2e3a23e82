-- Queue webhook jobs and apply the delay-and-cancel rule, atomically, in the given order.
-- KEYS[1]: sorted set job -> due time in ms (P:{A}:wh:due)
-- KEYS[2]: hash job -> job JSON (P:{A}:wh:jobs)
-- KEYS[3]: hash cancel key -> pending delayed job (P:{A}:wh:cancel)
-- KEYS[4]: hash delayed job -> its cancel key (P:{A}:wh:ckey)
-- KEYS[5]: counter for job ids (P:{A}:wh:seq)
-- ARGV[1]: n, then n x (job JSON or "", due ms, set-cancel key or "", check-cancel key or "")
-- Returns per entry 1 (queued), 0 (nothing) or -1 (withdrew a pending job; this entry's job not queued).
local out = {}
local i = 2
for e = 1, tonumber(ARGV[1]) do
  local job, due, setk, checkk = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  i = i + 4
  local status = 0
  if checkk ~= '' then
    local pending = redis.call('HGET', KEYS[3], checkk)
    if pending then
      redis.call('HDEL', KEYS[3], checkk)
      redis.call('HDEL', KEYS[4], pending)
      if redis.call('HDEL', KEYS[2], pending) == 1 then
        redis.call('ZREM', KEYS[1], pending)
        status = -1
      end
    end
  end
  if status == 0 and job ~= '' then
    local id = tostring(redis.call('INCR', KEYS[5]))
    redis.call('HSET', KEYS[2], id, job)
    redis.call('ZADD', KEYS[1], due, id)
    if setk ~= '' then
      redis.call('HSET', KEYS[3], setk, id)
      redis.call('HSET', KEYS[4], id, setk)
    end
    status = 1
  end
  out[e] = status
end
return out
