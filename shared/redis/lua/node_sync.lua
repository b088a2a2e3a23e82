-- Make a node's records of one app equal to what it holds (empty for a dead node being reaped), and
-- apply the difference to the cluster-wide aggregates, reporting every transition it caused.
-- KEYS[1]: hash channel -> subscriptions in the cluster (P:{A}:occ)
-- KEYS[2]: hash channel -> subscriptions held by NODE (P:{A}:occn:NODE)
-- KEYS[3]: hash "CHANNEL\nUSER" -> presence connections held by NODE (P:{A}:presn:NODE)
-- KEYS[4]: hash node -> open connections (P:{A}:conns)
-- KEYS[5]: hash user -> signed-in sockets in the cluster (P:{A}:uc)
-- KEYS[6]: hash user -> signed-in sockets held by NODE (P:{A}:ucn:NODE)
-- ARGV[1]: the app's key base (P:{A}), for the per-channel presence hashes
-- ARGV[2]: node id, ARGV[3]: its open connections
-- ARGV[4]: n, then n x (channel, subscriptions)
-- then m, then m x ("CHANNEL\nUSER", connections, member JSON)
-- then u, then u x (user, signed-in sockets)
-- Returns {occupied, vacated, added, removed, online, offline, counts}: added/removed as flat
-- (channel, member JSON) lists, counts as flat (channel, new subscription count) for every channel
-- whose count changed.
local base, node = ARGV[1], ARGV[2]
local i = 5
local want_occ, want_pres, want_member, want_users = {}, {}, {}, {}
for _ = 1, tonumber(ARGV[4]) do want_occ[ARGV[i]] = tonumber(ARGV[i + 1]); i = i + 2 end
local m = tonumber(ARGV[i]); i = i + 1
for _ = 1, m do
  want_pres[ARGV[i]] = tonumber(ARGV[i + 1]); want_member[ARGV[i]] = ARGV[i + 2]; i = i + 3
end
local u = tonumber(ARGV[i]); i = i + 1
for _ = 1, u do want_users[ARGV[i]] = tonumber(ARGV[i + 1]); i = i + 2 end

local function read_counts(key)
  local counts, flat = {}, redis.call('HGETALL', key)
  for j = 1, #flat, 2 do counts[flat[j]] = tonumber(flat[j + 1]) end
  return counts
end

-- Make this node's counts in node_key equal `want`, applying the difference to the cluster totals in
-- agg; returns the fields that went from 0 to some (ups), from some to 0 (downs), and every changed
-- field with its new total (flat).
local function sync_counts(agg, node_key, want)
  local have, ups, downs, changed = read_counts(node_key), {}, {}, {}
  local function apply(f, w)
    local delta = w - (have[f] or 0)
    if delta == 0 then return end
    local before = tonumber(redis.call('HGET', agg, f) or '0')
    local after = before + delta
    if after <= 0 then redis.call('HDEL', agg, f) else redis.call('HSET', agg, f, after) end
    if w > 0 then redis.call('HSET', node_key, f, w) else redis.call('HDEL', node_key, f) end
    if before <= 0 and after > 0 then table.insert(ups, f) end
    if before > 0 and after <= 0 then table.insert(downs, f) end
    table.insert(changed, f); table.insert(changed, math.max(after, 0))
  end
  for f, w in pairs(want) do apply(f, w) end
  for f, _ in pairs(have) do if want[f] == nil then apply(f, 0) end end
  return ups, downs, changed
end

local occupied, vacated, counts = sync_counts(KEYS[1], KEYS[2], want_occ)
local online, offline = sync_counts(KEYS[5], KEYS[6], want_users)

-- Presence totals live in one hash per channel, with the member's JSON beside them.
local added, removed = {}, {}
local have_pres = read_counts(KEYS[3])
local function apply_pres(f, want)
  local delta = want - (have_pres[f] or 0)
  if delta == 0 then return end
  local p = string.find(f, '\n', 1, true)
  local ch, user = string.sub(f, 1, p - 1), string.sub(f, p + 1)
  local pc, pm = base .. ':pc:' .. ch, base .. ':pm:' .. ch
  local before = tonumber(redis.call('HGET', pc, user) or '0')
  local after = before + delta
  if after <= 0 then
    local member = redis.call('HGET', pm, user)
    redis.call('HDEL', pc, user)
    redis.call('HDEL', pm, user)
    if before > 0 and member then table.insert(removed, ch); table.insert(removed, member) end
  else
    redis.call('HSET', pc, user, after)
    if before <= 0 then
      redis.call('HSET', pm, user, want_member[f])
      table.insert(added, ch); table.insert(added, want_member[f])
    end
  end
  if want > 0 then redis.call('HSET', KEYS[3], f, want) else redis.call('HDEL', KEYS[3], f) end
end
for f, want in pairs(want_pres) do apply_pres(f, want) end
for f, _ in pairs(have_pres) do if want_pres[f] == nil then apply_pres(f, 0) end end

if tonumber(ARGV[3]) > 0 then redis.call('HSET', KEYS[4], node, ARGV[3]) else redis.call('HDEL', KEYS[4], node) end
return {occupied, vacated, added, removed, online, offline, counts}
