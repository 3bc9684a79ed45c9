--[[
load_graph.lua: replace the stored graph atomically.

Workers see either the old graph or the new one, never a mix. The slot state of
a node whose definition is unchanged survives the load; the slot state of a
node that changed or disappeared is dropped (its arguments may now mean
something else). The graph version is bumped, which makes every running
worker's next commit fail its version check, reload the graph and recompute.

KEYS[1]  sc:{NS}:graph   hash: derived node -> canonical JSON definition
KEYS[2]  sc:{NS}:meta    hash: graph_version, graph_hash, graph_loaded_ms
KEYS[3]  sc:{NS}:slots   hash: derived node -> JSON slot list
KEYS[4]  sc:{NS}:ver     hash: derived node -> slot state version

ARGV: graph_hash, loaded_ms, n_nodes, (node, definition) ...

Returns the new graph version (an integer).
]]

local graph_key, meta_key, slots_key, ver_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local graph_hash, loaded_ms, n = ARGV[1], ARGV[2], tonumber(ARGV[3])

local new = {}
local pairs_list = {}
for i = 0, n - 1 do
  local node, def = ARGV[4 + 2 * i], ARGV[5 + 2 * i]
  new[node] = def
  pairs_list[#pairs_list + 1] = node
  pairs_list[#pairs_list + 1] = def
end

local old = redis.call("HGETALL", graph_key)
for i = 1, #old, 2 do
  local node, def = old[i], old[i + 1]
  if new[node] ~= def then
    redis.call("HDEL", slots_key, node)
    -- the version must never repeat for a node, or a worker holding a state cached
    -- before the load could pass a later version check: bump it instead of deleting
    redis.call("HINCRBY", ver_key, node, 1)
  end
end

redis.call("DEL", graph_key)
for i = 1, #pairs_list, 500 do
  redis.call("HSET", graph_key, unpack(pairs_list, i, math.min(i + 499, #pairs_list)))
end
local version = redis.call("HINCRBY", meta_key, "graph_version", 1)
redis.call("HSET", meta_key, "graph_hash", graph_hash, "graph_loaded_ms", loaded_ms)
return version
