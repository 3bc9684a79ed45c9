--[[
leave.lua: remove a consumer from its group, but only if it owns no pending entry.

Checking and deleting in one script means no entry can become pending for the
consumer in between: XGROUP DELCONSUMER would otherwise drop its pending
entries from the group for good.

KEYS[1]  sc:{NS}:in     input stream
ARGV[1]  group name
ARGV[2]  consumer name

Returns 1 when the consumer was removed, 0 when it owns pending entries.
]]

local pending = redis.call("XPENDING", KEYS[1], ARGV[1], "-", "+", 1, ARGV[2])
if #pending > 0 then
  return 0
end
redis.call("XGROUP", "DELCONSUMER", KEYS[1], ARGV[1], ARGV[2])
return 1
