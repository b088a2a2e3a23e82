-- Spend points from an app's rate bucket if they are there (GCRA; shared/ratelimit/base.py).
-- KEYS[1]: string, the bucket's theoretical arrival time in microseconds (P:{A}:rl:KIND)
-- ARGV[1]: limit, points per second (> 0), ARGV[2]: points (<= limit)
-- Returns {allowed 1/0, remaining points, retry after (us), until full (us)}.
-- Time is the Redis server's, so every process of the cluster counts on one clock.
local limit = tonumber(ARGV[1])
local points = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local burst = 1000000
local interval = burst / limit
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + points * interval
local allow_at = new_tat - burst
if allow_at > now then
  return {0, math.floor((now + burst - tat) / interval), math.ceil(allow_at - now), math.ceil(tat - now)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((now + burst - new_tat) / interval), 0, math.ceil(new_tat - now)}
