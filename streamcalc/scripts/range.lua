--[[
range.lua: XRANGE or XREVRANGE of one stream with each entry's fields as Redis holds them.

redis-py turns an entry's fields into a dict, which keeps only the last of a
field written twice (XADD allows it); history and dead letters must show what
the entry really carries, so they read through here.

KEYS[1]  the stream

ARGV[1]  "XRANGE" or "XREVRANGE"
ARGV[2]  the first bound (XRANGE: start; XREVRANGE: end)
ARGV[3]  the second bound
ARGV[4]  count

Returns the entries as XRANGE does: {{id, {field, value, ...}}, ...}.
]]

local command = ARGV[1]
if command ~= "XRANGE" and command ~= "XREVRANGE" then
  return redis.error_reply("range.lua: XRANGE or XREVRANGE")
end
return redis.call(command, KEYS[1], ARGV[2], ARGV[3], "COUNT", ARGV[4])
