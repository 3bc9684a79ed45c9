--[[
route.lua: move entries of the namespace's routing stream into one partition's input stream.

With P > 1 partitions, producers that do not know the partitions XADD to
sc:{NS}:in; one worker at a time reads it in order and calls this script once
per partition that a batch has entries for, then acknowledges the batch on the
routing stream. The partition remembers the newest routing ID it took in, and
takes in only entries after it: a router that dies between this script and its
acknowledgement, and the next router that moves the same entries again, move
nothing twice. Entries keep their order, so each key's entries stay in order.

KEYS[1]  in     input stream of the partition
KEYS[2]  meta   hash of the partition: "routed" = newest routing ID taken in

ARGV: n_entries, then for each: routing id, n_fields, field, value, ...
      (the router adds @ts = the routing entry's time when an entry has none)

Reply: the number of entries moved (those not moved were moved before).
]]

local in_key, meta_key = KEYS[1], KEYS[2]

-- #include ids

local marker = redis.call("HGET", meta_key, "routed") or "0-0"
local moved, pos = 0, 2
for _ = 1, tonumber(ARGV[1]) do
  local id, n_fields = ARGV[pos], tonumber(ARGV[pos + 1])
  local first, last = pos + 2, pos + 1 + 2 * n_fields
  pos = last + 1
  if id_less(marker, id) then
    redis.call("XADD", in_key, "*", unpack(ARGV, first, last))
    marker = id
    moved = moved + 1
  end
end
if moved > 0 then redis.call("HSET", meta_key, "routed", marker) end
return moved
