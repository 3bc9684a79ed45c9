--[[
load_graph.lua: replace the stored graph of one partition atomically.

The partition's entries see either the old graph or the new one, never a mix.
The graph version is bumped, which makes the owner's next commit fail its
version check, reload the graph and recompute. Slot state is not touched here:
stored slots carry the generation of their node's definition, so the slots of a
node that changed read as empty (its arguments may now mean something else) and
those of an unchanged node survive, for every key, without a scan.

KEYS[1]  graph   hash: derived node -> canonical JSON definition
KEYS[2]  meta    hash: graph_version, graph_hash, graph_loaded_ms
KEYS[3]  unknown sorted set of names read that are not nodes: a new graph counts anew

ARGV: graph_hash, loaded_ms, n_nodes, (node, definition) ...

Returns the new graph version (an integer).
]]

local graph_key, meta_key = KEYS[1], KEYS[2]
local graph_hash, loaded_ms, n = ARGV[1], ARGV[2], tonumber(ARGV[3])

local pairs_list = {}
for i = 0, n - 1 do
  pairs_list[#pairs_list + 1] = ARGV[4 + 2 * i]
  pairs_list[#pairs_list + 1] = ARGV[5 + 2 * i]
end

redis.call("DEL", graph_key, KEYS[3])
for i = 1, #pairs_list, 500 do
  redis.call("HSET", graph_key, unpack(pairs_list, i, math.min(i + 499, #pairs_list)))
end
local version = redis.call("HINCRBY", meta_key, "graph_version", 1)
redis.call("HSET", meta_key, "graph_hash", graph_hash, "graph_loaded_ms", loaded_ms)
return version
