--[[
unknown.lua: count readings of names that are not nodes of the graph, keeping only the most
frequent ones.

The sorted set holds at most ARGV[1] names (the Space-Saving scheme): a name already
there gains its count; a new name takes a free place, or else the place of the least
frequent name, inheriting its count (so a name that becomes frequent always gets in,
and a count is at most the true count plus the one it inherited).

KEYS[1]  unknown   sorted set: name -> how often it was read

ARGV: capacity, (name, count) ...

Returns the number of names in the set.
]]

local key, capacity = KEYS[1], tonumber(ARGV[1])
local size = redis.call("ZCARD", key)
for i = 2, #ARGV - 1, 2 do
  local name, count = ARGV[i], tonumber(ARGV[i + 1])
  if redis.call("ZSCORE", key, name) then
    redis.call("ZINCRBY", key, count, name)
  elseif size < capacity then
    redis.call("ZADD", key, count, name)
    size = size + 1
  else
    local least = redis.call("ZRANGE", key, 0, 0, "WITHSCORES")
    redis.call("ZREM", key, least[1])
    redis.call("ZADD", key, tonumber(least[2]) + count, name)
  end
end
return size
