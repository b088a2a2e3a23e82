-- A presence channel's roster with its place in the app's order.
-- KEYS[1]: hash user -> member JSON (P:{A}:pm:CHANNEL)
-- KEYS[2]: the app's stamp clock (P:{A}:clock)
-- ARGV[1]: clock lifetime ms
-- Returns {stamp, list of member JSON}: the roster reflects every transition stamped before `stamp`.
local t = redis.call('TIME')
local s = math.max(t[1] * 1000000 + t[2], (tonumber(redis.call('GET', KEYS[2])) or 0) + 1)
redis.call('SET', KEYS[2], string.format('%.0f', s), 'PX', ARGV[1])
return {s, redis.call('HVALS', KEYS[1])}
