--[[
commit.lua: commit one batch of waves of one partition atomically, fenced by its lease.

A worker that owns a partition evaluates a batch of its input entries in Python
against its cached slot state, then calls this script once. Either everything
of the batch becomes visible at once (new slot state, derived values in `out`,
latest values, dead letters, XACK of every entry) or nothing does and the
script says why. Nothing is written before every check passes.

KEYS[1]  in      input stream of the partition (entries are XACKed here)
KEYS[2]  out     output stream (one entry per fired value)
KEYS[3]  dead    dead-letter stream
KEYS[4]  slots   hash: state field -> "<generation> <json slot list>"
KEYS[5]  latest  hash: state field -> "<ts> <json value>" (the empty key's nodes), or a
                 non-empty key's field -> its whole latest values (the worker's own merge)
KEYS[6]  meta    hash: graph_version, ...
KEYS[7]  lease   string: "<consumer> <epoch>" of the partition's owner
KEYS[8]  fresh   hash: node -> newest ts of its values over all keys
KEYS[9]  keys    sorted set: key -> newest ts of its values

A state field is the node name for the empty key and "<key>|" (all of the key's
nodes in one field) otherwise.

ARGV[1]  group
ARGV[2]  consumer
ARGV[3]  graph version the batch was computed with
ARGV[4]  the lease token this worker holds
ARGV[5]  the batch, MessagePack: an array of seven flat arrays of strings
           [1] entry id ...                     entries this batch finishes, lowest
                                                and highest ID first, then all of them
           [2] field, slots ...                 slot states the batch changed
           [3] node, value, ts, src, key ...    fired values in wave order (key "" = none)
           [4] field, ts, value ...             newest value per state field in the batch
           [5] node, ts ...                     newest ts per node in the batch
           [6] key, ts ...                      newest ts per non-empty key in the batch
           [7] field, ts, value ...             as [4], for fields whose stored ts the
                                                worker knows is not newer (it wrote them
                                                under this lease): written without reading
           [8] field, latest values ...         whole latest values per non-empty key,
                                                written as they are (the owner merged them)
         (one decode in C instead of an ARGV walk in Lua: the hot path)
ARGV[6]  number of dead letters, then for each, flat in ARGV (fields may be binary,
         which MessagePack in Redis's Lua cannot carry):
           src id, error, node or "", deliveries or "", truncated ("1") or "",
           n_fields, field, value, ...

Timestamps are compared as digit strings (shorter is smaller), never as Lua
doubles, so every integer ts up to 2^63 compares exactly.

Checks, in order; none writes anything:
  1. the stored graph version equals ours        -> {"graph", stored version}
  2. the lease is ours (fencing: a worker that lost the partition writes nothing)
                                                 -> {"fenced", current holder or ""}
  3. every entry is still pending for this consumer (XPENDING over the batch's
     ID range)                                   -> {"gone", id...}
Success returns {"ok", field...}: the fields of [4] whose stored value was newer and stayed.
]]

local in_key, out_key, dead_key, slots_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local latest_key, meta_key, lease_key, fresh_key, keys_key = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local group, consumer, graph_version, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local CHUNK = 500  -- stay far below Lua's unpack() limit

local function call_chunked(cmd, key, prefix, list)
  -- cmd key prefix... item..., CHUNK items a call; returns the concatenated replies
  local out = {}
  for i = 1, #list, CHUNK do
    local args = {}
    for j = 1, #prefix do args[#args + 1] = prefix[j] end
    for j = i, math.min(i + CHUNK - 1, #list) do args[#args + 1] = list[j] end
    local reply = redis.call(cmd, key, unpack(args))
    if type(reply) == "table" then
      for _, r in ipairs(reply) do out[#out + 1] = r end
    end
  end
  return out
end

-- #include ids

local function newer_or_equal(ts, than)
  return not num_less(ts, than)
end

local function keep_newest(hash_key, flat, stride, render, kept)
  -- flat: field, ts, ... (stride items each); HSET field render(i) where ts >= the stored ts;
  -- the other fields are added to kept
  local fields = {}
  for i = 1, #flat, stride do fields[#fields + 1] = flat[i] end
  if #fields == 0 then return end
  local current = call_chunked("HMGET", hash_key, {}, fields)
  local updates = {}
  for k, f in ipairs(fields) do
    local i = (k - 1) * stride + 1
    local ts, cur = flat[i + 1], current[k]
    local newer = true
    if cur then
      local space = string.find(cur, " ", 1, true)
      newer = newer_or_equal(ts, space and string.sub(cur, 1, space - 1) or cur)
    end
    if newer then
      updates[#updates + 1] = f
      updates[#updates + 1] = render(i)
    else
      kept[#kept + 1] = f
    end
  end
  if #updates > 0 then call_chunked("HSET", hash_key, {}, updates) end
end

-- 1. graph version
local stored = redis.call("HGET", meta_key, "graph_version")
if stored ~= graph_version then
  return {"graph", stored or "0"}
end

-- 2. the lease
local holder = redis.call("GET", lease_key)
if holder ~= token then
  return {"fenced", holder or ""}
end

local batch = cmsgpack.unpack(ARGV[5])
local writes, fired, latest, fresh, keyts = batch[2], batch[3], batch[4], batch[5], batch[6]
local stored_latest = batch[8] or {}
local ids = {}
for i = 3, #batch[1] do ids[#ids + 1] = batch[1][i] end

-- 3. entries still pending for us
if #ids > 0 then
  local lo, hi = batch[1][1], batch[1][2]
  local mine = {}
  for _, p in ipairs(redis.call("XPENDING", in_key, group, lo, hi, #ids * 2 + 64, consumer)) do
    mine[p[1]] = true
  end
  local gone = {"gone"}
  for _, id in ipairs(ids) do
    if not mine[id] then gone[#gone + 1] = id end
  end
  if #gone > 1 then return gone end
end

-- every check passed: write
if #writes > 0 then call_chunked("HSET", slots_key, {}, writes) end

for i = 1, #fired, 5 do
  if fired[i + 4] == "" then
    redis.call("XADD", out_key, "*", fired[i], fired[i + 1], "@ts", fired[i + 2], "@src", fired[i + 3])
  else
    redis.call("XADD", out_key, "*", fired[i], fired[i + 1], "@ts", fired[i + 2], "@src", fired[i + 3],
      "@key", fired[i + 4])
  end
end

local reply = {"ok"}
keep_newest(latest_key, latest, 3, function(i) return latest[i + 1] .. " " .. latest[i + 2] end, reply)
keep_newest(fresh_key, fresh, 2, function(i) return fresh[i + 1] end, {})
local known = batch[7] or {}
if #known > 0 then
  local updates = {}
  for i = 1, #known, 3 do
    updates[#updates + 1] = known[i]
    updates[#updates + 1] = known[i + 1] .. " " .. known[i + 2]
  end
  call_chunked("HSET", latest_key, {}, updates)
end
if #stored_latest > 0 then call_chunked("HSET", latest_key, {}, stored_latest) end
for i = 1, #keyts, 2 * CHUNK do
  local args = {}
  for j = i, math.min(i + 2 * CHUNK - 1, #keyts), 2 do
    args[#args + 1] = keyts[j + 1]
    args[#args + 1] = keyts[j]
  end
  redis.call("ZADD", keys_key, "GT", unpack(args))
end

local pos = 7
local function take()
  local v = ARGV[pos]
  pos = pos + 1
  return v
end
-- A letter's own fields; an original field of one of these names, or one that
-- starts with "@in_", is kept as "@in_<name>" (dead_retry.lua undoes it), so a
-- letter keeps its entry exactly. The Python side: DEAD_* in scripts/__init__.py.
local LETTER = {["@error"] = true, ["@src"] = true, ["@node"] = true,
  ["@deliveries"] = true, ["@truncated"] = true}
for _ = 1, tonumber(ARGV[6]) do
  local src, err, node, deliveries, truncated = take(), take(), take(), take(), take()
  local n_fields = tonumber(take())
  local args = {}
  for _ = 1, n_fields do
    local f, v = take(), take()
    if LETTER[f] or string.sub(f, 1, 4) == "@in_" then f = "@in_" .. string.sub(f, 2) end
    args[#args + 1] = f
    args[#args + 1] = v
  end
  args[#args + 1] = "@error"
  args[#args + 1] = err
  args[#args + 1] = "@src"
  args[#args + 1] = src
  if node ~= "" then
    args[#args + 1] = "@node"
    args[#args + 1] = node
  end
  if deliveries ~= "" then
    args[#args + 1] = "@deliveries"
    args[#args + 1] = deliveries
  end
  if truncated ~= "" then
    args[#args + 1] = "@truncated"
    args[#args + 1] = truncated
  end
  redis.call("XADD", dead_key, "*", unpack(args))
end

if #ids > 0 then call_chunked("XACK", in_key, {group}, ids) end
return reply
