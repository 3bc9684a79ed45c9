--[[
commit.lua: commit one batch of waves atomically (optimistic concurrency).

A worker evaluates a batch of input entries in Python against its cached slot
state, then calls this script once. Either everything of the batch becomes
visible at once (new slot state, derived values in `out`, latest values, dead
letters, XACK of every entry) or nothing does and the script says why, so the
worker can refresh and recompute. Nothing is written before every check passes.

KEYS[1]  sc:{NS}:in      input stream (entries are XACKed here)
KEYS[2]  sc:{NS}:out     output stream (one entry per fired value)
KEYS[3]  sc:{NS}:dead    dead-letter stream
KEYS[4]  sc:{NS}:slots   hash: derived node -> JSON slot list
KEYS[5]  sc:{NS}:ver     hash: derived node -> version of its slot state
KEYS[6]  sc:{NS}:latest  hash: node -> "<ts> <json value>"
KEYS[7]  sc:{NS}:meta    hash: graph_version, ...

ARGV[1]  group
ARGV[2]  consumer
ARGV[3]  graph version the batch was computed with
ARGV[4]  the batch, MessagePack: an array of five flat arrays of strings
           [1] entry id ...                     entries this batch finishes, lowest
                                                and highest ID first, then all of them
           [2] node, expected version ...       every slot state the batch read
           [3] node, slot json ...              slot states it changed (version + 1)
           [4] node, value json, ts, src ...    fired values, in wave order
           [5] node, ts, value json ...         newest value per node in the batch
         (one decode in C instead of an ARGV walk in Lua: the hot path)
ARGV[5]  number of dead letters, then for each, flat in ARGV (fields may be binary,
         which MessagePack in Redis's Lua cannot carry):
           src id, error, node or "", n_fields, field, value, ...

Checks, in order; none writes anything:
  1. the stored graph version equals ours      -> {"graph", stored version}
  2. every entry is still pending for this consumer (XPENDING over the batch's
     ID range); one that another consumer finished or claimed is "gone"
  3. every checked slot state has the expected version
Failure of 2 or 3 returns {"retry", n_gone, id..., n_moved, (node, version, slots)...}.
Success returns {"ok"}.
]]

local in_key, out_key, dead_key = KEYS[1], KEYS[2], KEYS[3]
local slots_key, ver_key, latest_key, meta_key = KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local group, consumer, graph_version = ARGV[1], ARGV[2], ARGV[3]

local CHUNK = 500  -- stay far below Lua's unpack() limit

local function call_chunked(cmd, key, prefix, list, suffix)
  -- cmd key prefix... item... suffix..., CHUNK items a call; returns the concatenated replies
  local out = {}
  for i = 1, #list, CHUNK do
    local args = {}
    for j = 1, #prefix do args[#args + 1] = prefix[j] end
    for j = i, math.min(i + CHUNK - 1, #list) do args[#args + 1] = list[j] end
    if suffix then args[#args + 1] = suffix end
    local reply = redis.call(cmd, key, unpack(args))
    if type(reply) == "table" then
      for _, r in ipairs(reply) do out[#out + 1] = r end
    end
  end
  return out
end

-- 1. graph version
local stored = redis.call("HGET", meta_key, "graph_version")
if stored ~= graph_version then
  return {"graph", stored or "0"}
end

local batch = cmsgpack.unpack(ARGV[4])
local checks, writes, fired, latest = batch[2], batch[3], batch[4], batch[5]
local ids = {}
for i = 3, #batch[1] do ids[#ids + 1] = batch[1][i] end

-- 2. entries still pending for us; those that are not were finished or claimed by
--    another consumer, which will commit them itself
local gone = {}
if #ids > 0 then
  local lo, hi = batch[1][1], batch[1][2]
  local mine = {}
  for _, p in ipairs(redis.call("XPENDING", in_key, group, lo, hi, #ids * 2 + 64, consumer)) do
    mine[p[1]] = true
  end
  for _, id in ipairs(ids) do
    if not mine[id] then gone[#gone + 1] = id end
  end
end

-- 3. versions of every slot state the batch read
local check_nodes, expected = {}, {}
for i = 1, #checks, 2 do
  check_nodes[#check_nodes + 1] = checks[i]
  expected[checks[i]] = checks[i + 1]
end
local moved = {}
if #check_nodes > 0 then
  local current = call_chunked("HMGET", ver_key, {}, check_nodes)
  for i, node in ipairs(check_nodes) do
    local have = current[i] or "0"
    if have ~= expected[node] then
      moved[#moved + 1] = node
      moved[#moved + 1] = have
      moved[#moved + 1] = redis.call("HGET", slots_key, node) or ""
    end
  end
end

if #gone > 0 or #moved > 0 then
  local reply = {"retry", #gone}
  for _, id in ipairs(gone) do reply[#reply + 1] = id end
  reply[#reply + 1] = #moved / 3
  for _, v in ipairs(moved) do reply[#reply + 1] = v end
  return reply
end

-- every check passed: write
if #writes > 0 then
  local versions = {}
  for i = 1, #writes, 2 do
    versions[#versions + 1] = writes[i]
    versions[#versions + 1] = tostring(tonumber(expected[writes[i]] or "0") + 1)
  end
  call_chunked("HSET", slots_key, {}, writes)
  call_chunked("HSET", ver_key, {}, versions)
end

for i = 1, #fired, 4 do
  redis.call("XADD", out_key, "*", fired[i], fired[i + 1], "@ts", fired[i + 2], "@src", fired[i + 3])
end

if #latest > 0 then
  local nodes = {}
  for i = 1, #latest, 3 do nodes[#nodes + 1] = latest[i] end
  local current = call_chunked("HMGET", latest_key, {}, nodes)
  local updates = {}
  for k, node in ipairs(nodes) do
    local ts, value = latest[3 * k - 1], latest[3 * k]
    local cur = current[k]
    local newer = true
    if cur then
      local cur_ts = tonumber(string.sub(cur, 1, string.find(cur, " ", 1, true) - 1))
      newer = tonumber(ts) >= cur_ts
    end
    if newer then
      updates[#updates + 1] = node
      updates[#updates + 1] = ts .. " " .. value
    end
  end
  if #updates > 0 then call_chunked("HSET", latest_key, {}, updates) end
end

local pos = 6
local function take()
  local v = ARGV[pos]
  pos = pos + 1
  return v
end
for _ = 1, tonumber(ARGV[5]) do
  local src, err, node, n_fields = take(), take(), take(), tonumber(take())
  local args = {}
  for _ = 1, n_fields do
    local f, v = take(), take()
    -- the dead letter's own @ fields win; an original @src is kept under @in_src
    if f == "@src" then f = "@in_src" end
    if f ~= "@error" and f ~= "@node" then
      args[#args + 1] = f
      args[#args + 1] = v
    end
  end
  args[#args + 1] = "@error"
  args[#args + 1] = err
  args[#args + 1] = "@src"
  args[#args + 1] = src
  if node ~= "" then
    args[#args + 1] = "@node"
    args[#args + 1] = node
  end
  redis.call("XADD", dead_key, "*", unpack(args))
end

if #ids > 0 then call_chunked("XACK", in_key, {group}, ids) end
return {"ok"}
