--[[
fetch.lua: read or claim entries of a partition's input stream, only while holding its lease.

Every delivery to a worker goes through here, so a worker that lost a
partition's lease can never be handed one of its entries: the new owner,
which claims everything pending when it takes the partition, then sees the
whole rest of the stream in order.

KEYS[1]  in      input stream of the partition
KEYS[2]  lease   string: "<consumer> <epoch>" of the owner

ARGV[1]  "read" or "claim"
ARGV[2]  group
ARGV[3]  consumer
ARGV[4]  the lease token this worker holds
ARGV[5]  count
ARGV[6]  read: ">" (new entries) or "0" (own pending ones); claim: the XAUTOCLAIM cursor
ARGV[7]  read "0": the most deliveries an entry may have (--max-deliveries; "" = no check)
ARGV[8..11] read "0": how a poison entry's fields are cut (the dead letter's limits):
         most fields, budget of value bytes, longest value kept whole, prefix of a longer one

Reply:
  {"fenced", holder or ""}      the lease is not ours; nothing was read or claimed
  read:  {"ok", entries, last}  entries as XREADGROUP gives them for one stream (or
                                empty); last = the stream's newest ID when there
                                were no new entries ("" if none), to wait after
         {"ok", {}, "", poison} read "0", when the first own pending entry is poison
                                (this read would pass ARGV[7]): poison = {id,
                                deliveries (counting this one), total fields,
                                {kept fields...}, {name, length of each value cut...}}
                                or {id, deliveries} for a deleted entry; its fields
                                are cut here so that no worker ever holds all of a
                                huge entry that kills workers (it is not re-delivered)
  claim: {"ok", cursor, n}      XAUTOCLAIM of every pending entry, idle or not
]]

local in_key, lease_key = KEYS[1], KEYS[2]
local op, group, consumer, token, count = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]

local holder = redis.call("GET", lease_key)
if holder ~= token then return {"fenced", holder or ""} end

if op == "claim" then
  local reply = redis.call("XAUTOCLAIM", in_key, group, consumer, 0, ARGV[6], "COUNT", count, "JUSTID")
  return {"ok", reply[1], #reply[2]}
end

-- A poison entry as a dead letter keeps it: its fields cut as protocol.py's _bounded does.
local function bounded(entry_id, deliveries)
  local found = redis.call("XRANGE", in_key, entry_id, entry_id)
  if not found[1] then return {entry_id, deliveries} end
  local fields = found[1][2]
  local max_fields, budget = tonumber(ARGV[8]), tonumber(ARGV[9])
  local longest, prefix = tonumber(ARGV[10]), tonumber(ARGV[11])
  local kept, cut = {}, {}
  for i = 1, math.min(#fields, 2 * max_fields) - 1, 2 do
    local value = fields[i + 1]
    if #value > longest or #value > budget then
      cut[#cut + 1] = fields[i]
      cut[#cut + 1] = #value
      value = string.sub(value, 1, prefix)
    end
    budget = math.max(budget - #value, 0)
    kept[#kept + 1] = fields[i]
    kept[#kept + 1] = value
  end
  return {entry_id, deliveries, #fields / 2, kept, cut}
end

if ARGV[6] == "0" and ARGV[7] ~= nil and ARGV[7] ~= "" then
  local limit = tonumber(ARGV[7])
  local own = redis.call("XPENDING", in_key, group, "-", "+", count, consumer)
  for i, pending in ipairs(own) do
    if tonumber(pending[4]) >= limit then
      if i == 1 then return {"ok", {}, "", bounded(pending[1], pending[4] + 1)} end
      count = i - 1  -- the entries before it now; it comes first in the next read
      break
    end
  end
end

local reply = redis.call("XREADGROUP", "GROUP", group, consumer, "COUNT", count, "STREAMS", in_key, ARGV[6])
if reply and #reply[1][2] > 0 then return {"ok", reply[1][2], ""} end
local newest = redis.call("XREVRANGE", in_key, "+", "-", "COUNT", 1)
return {"ok", {}, newest[1] and newest[1][1] or ""}
