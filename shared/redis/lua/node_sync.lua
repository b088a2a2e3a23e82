-- Make a node's records of one app equal to what it holds (empty for a dead node being reaped), and
-- apply the difference to the cluster-wide aggregates, reporting every transition it caused, stamped.
-- KEYS[1]: hash channel -> subscriptions in the cluster (P:{A}:occ)
-- KEYS[2]: hash channel -> subscriptions held by NODE (P:{A}:occn:NODE)
-- KEYS[3]: hash presence field -> presence connections held by NODE (P:{A}:presn:NODE)
-- KEYS[4]: hash node -> open connections (P:{A}:conns)
-- KEYS[5]: hash user -> signed-in sockets in the cluster (P:{A}:uc)
-- KEYS[6]: hash user -> signed-in sockets held by NODE (P:{A}:ucn:NODE)
-- KEYS[7]: the app's stamp clock (P:{A}:clock)
-- ARGV[1]: the app's key base (P:{A}), for the per-channel keys
-- ARGV[2]: node id, ARGV[3]: its open connections
-- ARGV[4]: 1 to report occupied/added/online transitions, 0 to apply them silently (the state was
--          lost, e.g. Redis restarted empty, and the node writes back what already held before)
-- ARGV[5]: clock lifetime ms, ARGV[6]: how long a vacate or removal is remembered, ms
-- ARGV[7]: n, then n x (channel, subscriptions)
-- then m, then m x (presence field, connections, member JSON); a presence field is the channel's
-- byte length, ':', the channel, then the user key (shared/state/redis_node.py presence_field)
-- then u, then u x (user, signed-in sockets)
-- Returns {occupied, vacated, added, removed, online, offline, counts} as flat lists: occupied
-- (channel, stamp, after), vacated (channel, stamp), added (channel, member JSON, stamp, after),
-- removed (channel, member JSON, stamp), online/offline users, counts (channel, new subscription
-- count) for every channel whose count changed.
local base, node = ARGV[1], ARGV[2]
local report_ups = ARGV[4] == '1'
local clock_ms, recent_ms = ARGV[5], ARGV[6]
local i = 8
local want_occ, want_pres, want_member, want_users = {}, {}, {}, {}
for _ = 1, tonumber(ARGV[7]) do want_occ[ARGV[i]] = tonumber(ARGV[i + 1]); i = i + 2 end
local m = tonumber(ARGV[i]); i = i + 1
for _ = 1, m do
  want_pres[ARGV[i]] = tonumber(ARGV[i + 1]); want_member[ARGV[i]] = ARGV[i + 2]; i = i + 3
end
local u = tonumber(ARGV[i]); i = i + 1
for _ = 1, u do want_users[ARGV[i]] = tonumber(ARGV[i + 1]); i = i + 2 end

local last_stamp = nil
local function next_stamp()
  if last_stamp then
    last_stamp = last_stamp + 1
  else
    local t = redis.call('TIME')
    last_stamp = math.max(t[1] * 1000000 + t[2], (tonumber(redis.call('GET', KEYS[7])) or 0) + 1)
  end
  return last_stamp
end

-- A vacate (removal) is remembered under `key` so the next occupy (add) can name it; an occupy
-- (add) takes the stamp of the one it follows.
local function remember(key, stamp) redis.call('SET', key, string.format('%.0f', stamp), 'PX', recent_ms) end
local function take(key)
  local after = tonumber(redis.call('GET', key)) or 0
  redis.call('DEL', key)
  return after
end

local function read_counts(key)
  local counts, flat = {}, redis.call('HGETALL', key)
  for j = 1, #flat, 2 do counts[flat[j]] = tonumber(flat[j + 1]) end
  return counts
end

-- Make this node's counts in node_key equal `want`, applying the difference to the cluster totals in
-- agg; reports the fields that went from 0 to some (ups) and from some to 0 (downs) through
-- on_up / on_down, and returns every changed field with its new total (flat).
local function sync_counts(agg, node_key, want, on_up, on_down)
  local have, changed = read_counts(node_key), {}
  local function apply(f, w)
    local delta = w - (have[f] or 0)
    if delta == 0 then return end
    local before = tonumber(redis.call('HGET', agg, f) or '0')
    local after = before + delta
    if after <= 0 then redis.call('HDEL', agg, f) else redis.call('HSET', agg, f, after) end
    if w > 0 then redis.call('HSET', node_key, f, w) else redis.call('HDEL', node_key, f) end
    if before <= 0 and after > 0 then on_up(f) end
    if before > 0 and after <= 0 then on_down(f) end
    table.insert(changed, f); table.insert(changed, math.max(after, 0))
  end
  for f, w in pairs(want) do apply(f, w) end
  for f, _ in pairs(have) do if want[f] == nil then apply(f, 0) end end
  return changed
end

local occupied, vacated, online, offline = {}, {}, {}, {}
local counts = sync_counts(KEYS[1], KEYS[2], want_occ,
  function(ch)
    local after = take(base .. ':left:' .. ch)
    if report_ups then
      table.insert(occupied, ch); table.insert(occupied, next_stamp()); table.insert(occupied, after)
    end
  end,
  function(ch)
    local s = next_stamp()
    remember(base .. ':left:' .. ch, s)
    table.insert(vacated, ch); table.insert(vacated, s)
  end)
sync_counts(KEYS[5], KEYS[6], want_users,
  function(user) if report_ups then table.insert(online, user) end end,
  function(user) table.insert(offline, user) end)

-- Presence totals live in one hash per channel, with the member's JSON beside them.
local added, removed = {}, {}
local have_pres = read_counts(KEYS[3])
local function apply_pres(f, want)
  local delta = want - (have_pres[f] or 0)
  if delta == 0 then return end
  local colon = string.find(f, ':', 1, true)
  local len = tonumber(string.sub(f, 1, colon - 1))
  local ch, user = string.sub(f, colon + 1, colon + len), string.sub(f, colon + len + 1)
  local pc, pm, left = base .. ':pc:' .. ch, base .. ':pm:' .. ch, base .. ':mleft:' .. f
  local before = tonumber(redis.call('HGET', pc, user) or '0')
  local after = before + delta
  if after <= 0 then
    local member = redis.call('HGET', pm, user)
    redis.call('HDEL', pc, user)
    redis.call('HDEL', pm, user)
    if before > 0 and member then
      local s = next_stamp()
      remember(left, s)
      table.insert(removed, ch); table.insert(removed, member); table.insert(removed, s)
    end
  else
    redis.call('HSET', pc, user, after)
    if before <= 0 then
      redis.call('HSET', pm, user, want_member[f])
      local prev = take(left)
      if report_ups then
        table.insert(added, ch); table.insert(added, want_member[f])
        table.insert(added, next_stamp()); table.insert(added, prev)
      end
    end
  end
  if want > 0 then redis.call('HSET', KEYS[3], f, want) else redis.call('HDEL', KEYS[3], f) end
end
for f, want in pairs(want_pres) do apply_pres(f, want) end
for f, _ in pairs(have_pres) do if want_pres[f] == nil then apply_pres(f, 0) end end

if tonumber(ARGV[3]) > 0 then redis.call('HSET', KEYS[4], node, ARGV[3]) else redis.call('HDEL', KEYS[4], node) end
if last_stamp then redis.call('SET', KEYS[7], string.format('%.0f', last_stamp), 'PX', clock_ms) end
return {occupied, vacated, added, removed, online, offline, counts}
