-- Stamps for transitions found outside the state scripts (leaves that failed during an outage).
-- KEYS[1]: the app's stamp clock (P:{A}:clock)
-- ARGV[1]: how many, ARGV[2]: clock lifetime ms
-- Returns that many increasing stamps.
local t = redis.call('TIME')
local s = math.max(t[1] * 1000000 + t[2], (tonumber(redis.call('GET', KEYS[1])) or 0) + 1)
local out = {}
for i = 1, tonumber(ARGV[1]) do out[i] = s + i - 1 end
redis.call('SET', KEYS[1], string.format('%.0f', s + tonumber(ARGV[1]) - 1), 'PX', ARGV[2])
return out
