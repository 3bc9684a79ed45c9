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

ARGV, read left to right (every list is preceded by its length):
  group, consumer, graph_version, out_maxlen ("0" = unbounded)
  n_ids,      entry id ...                    entries this batch finishes
  n_checks,   (node, expected version) ...    every slot state the batch read
  n_writes,   (node, slot json) ...           slot states it changed (version + 1)
  n_out,      (node, value json, ts, src) ... fired values, in wave order
  n_latest,   (node, ts, value json) ...      newest value per node in the batch
  n_dead,     (src id, error, node or "", n_fields, field, value, ...) ...

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

local CHUNK = 500  -- stay far below Lua's unpack() limit

local pos = 1
local function take()
  local v = ARGV[pos]
  pos = pos + 1
  return v
end

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

local function stream_id_less(a, b)
  local a_ms, a_seq = string.match(a, "^(%d+)-(%d+)$")
  local b_ms, b_seq = string.match(b, "^(%d+)-(%d+)$")
  if #a_ms ~= #b_ms then return #a_ms < #b_ms end
  if a_ms ~= b_ms then return a_ms < b_ms end
  return tonumber(a_seq) < tonumber(b_seq)
end

local group, consumer, graph_version, out_maxlen = take(), take(), take(), tonumber(take())

-- 1. graph version
local stored = redis.call("HGET", meta_key, "graph_version")
if stored ~= graph_version then
  return {"graph", stored or "0"}
end

-- 2. entries still pending for us; those that are not were finished or claimed by
--    another consumer, which will commit them itself
local ids = {}
for i = 1, tonumber(take()) do ids[i] = take() end
local gone = {}
if #ids > 0 then
  local lo, hi = ids[1], ids[1]
  for _, id in ipairs(ids) do
    if stream_id_less(id, lo) then lo = id end
    if stream_id_less(hi, id) then hi = id end
  end
  local mine = {}
  for _, p in ipairs(redis.call("XPENDING", in_key, group, lo, hi, #ids * 2 + 64, consumer)) do
    mine[p[1]] = true
  end
  for _, id in ipairs(ids) do
    if not mine[id] then gone[#gone + 1] = id end
  end
end

-- 3. versions of every slot state the batch read
local check_nodes, check_vers = {}, {}
for i = 1, tonumber(take()) do
  check_nodes[i] = take()
  check_vers[i] = take()
end
local moved = {}
if #check_nodes > 0 then
  local current = call_chunked("HMGET", ver_key, {}, check_nodes)
  for i, node in ipairs(check_nodes) do
    local have = current[i]
    if not have then have = "0" end
    if have ~= check_vers[i] then
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
local expected = {}
for i, node in ipairs(check_nodes) do expected[node] = tonumber(check_vers[i]) end

local slot_args, ver_args = {}, {}
for _ = 1, tonumber(take()) do
  local node, blob = take(), take()
  slot_args[#slot_args + 1] = node
  slot_args[#slot_args + 1] = blob
  ver_args[#ver_args + 1] = node
  ver_args[#ver_args + 1] = (expected[node] or 0) + 1
end
if #slot_args > 0 then
  call_chunked("HSET", slots_key, {}, slot_args)
  call_chunked("HSET", ver_key, {}, ver_args)
end

for _ = 1, tonumber(take()) do
  local node, value, ts, src = take(), take(), take(), take()
  if out_maxlen > 0 then
    redis.call("XADD", out_key, "MAXLEN", "~", out_maxlen, "*", node, value, "@ts", ts, "@src", src)
  else
    redis.call("XADD", out_key, "*", node, value, "@ts", ts, "@src", src)
  end
end

local latest_nodes, latest_ts, latest_val = {}, {}, {}
for i = 1, tonumber(take()) do
  latest_nodes[i] = take()
  latest_ts[i] = take()
  latest_val[i] = take()
end
if #latest_nodes > 0 then
  local current = call_chunked("HMGET", latest_key, {}, latest_nodes)
  local updates = {}
  for i, node in ipairs(latest_nodes) do
    local cur = current[i]
    local newer = true
    if cur then
      local cur_ts = tonumber(string.sub(cur, 1, string.find(cur, " ", 1, true) - 1))
      newer = tonumber(latest_ts[i]) >= cur_ts
    end
    if newer then
      updates[#updates + 1] = node
      updates[#updates + 1] = latest_ts[i] .. " " .. latest_val[i]
    end
  end
  if #updates > 0 then call_chunked("HSET", latest_key, {}, updates) end
end

for _ = 1, tonumber(take()) do
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
