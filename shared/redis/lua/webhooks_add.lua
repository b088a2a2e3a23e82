-- Queue webhook jobs and apply the delay-and-cancel rule, atomically, in the given order.
-- KEYS[1]: sorted set job -> due time in ms (P:{A}:wh:due)
-- KEYS[2]: hash job -> job JSON (P:{A}:wh:jobs)
-- KEYS[3]: hash cancel key -> pending delayed job (P:{A}:wh:cancel)
-- KEYS[4]: hash delayed job -> its cancel key (P:{A}:wh:ckey)
-- KEYS[5]: counter for job ids (P:{A}:wh:seq)
-- ARGV[1]: base of the pairing records (P:{A}:wh): BASE:seen:KEY holds the stamp of the last delayed
--          event queued under a cancel key, BASE:early:KEY the stamp of a delayed event whose
--          cancelling partner arrived first; both expire after ARGV[2] ms
-- ARGV[3]: n, then n x (job JSON or "", due ms, set-cancel key or "", check-cancel key or "",
--          stamp, after): a delayed event sets its key; a cancelling one checks it and, with `after`
--          (the stamp of the delayed event it follows), pairs with exactly that one whatever order
--          the two arrive in (shared/webhooks/base.py JobStore.add)
-- Returns per entry 1 (queued), 0 (nothing), -1 (withdrew a pending job; this entry's job not
-- queued) or -2 (this entry's job not queued: its partner was or will be withheld).
local base, memory = ARGV[1], ARGV[2]
local out = {}
local i = 4
local function withdraw(checkk)
  local pending = redis.call('HGET', KEYS[3], checkk)
  if not pending then return false end
  redis.call('HDEL', KEYS[3], checkk)
  redis.call('HDEL', KEYS[4], pending)
  if redis.call('HDEL', KEYS[2], pending) == 1 then
    redis.call('ZREM', KEYS[1], pending)
    return true
  end
  return false
end
for e = 1, tonumber(ARGV[3]) do
  local job, due, setk, checkk = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local stamp, after = tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
  i = i + 6
  local status = 0
  if setk ~= '' and stamp > 0 then
    local early = base .. ':early:' .. setk
    if tonumber(redis.call('GET', early)) == stamp then
      redis.call('DEL', early)
      status = -2
    else
      redis.call('SET', base .. ':seen:' .. setk, ARGV[i - 2], 'PX', memory)
    end
  end
  if checkk ~= '' then
    if after > 0 then
      local seen = tonumber(redis.call('GET', base .. ':seen:' .. checkk)) or 0
      if seen == after and withdraw(checkk) then
        status = -1
      elseif seen < after then
        redis.call('SET', base .. ':early:' .. checkk, ARGV[i - 1], 'PX', memory)
        status = -2
      end
    elseif withdraw(checkk) then
      status = -1
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
