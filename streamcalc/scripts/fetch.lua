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

Reply:
  {"fenced", holder or ""}      the lease is not ours; nothing was read or claimed
  read:  {"ok", entries, last}  entries as XREADGROUP gives them for one stream (or
                                empty); last = the stream's newest ID when there
                                were no new entries ("" if none), to wait after
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

local reply = redis.call("XREADGROUP", "GROUP", group, consumer, "COUNT", count, "STREAMS", in_key, ARGV[6])
if reply and #reply[1][2] > 0 then return {"ok", reply[1][2], ""} end
local newest = redis.call("XREVRANGE", in_key, "+", "-", "COUNT", 1)
return {"ok", {}, newest[1] and newest[1][1] or ""}
