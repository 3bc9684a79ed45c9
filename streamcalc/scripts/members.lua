--[[
members.lua: renew a worker's membership of its group and list the live members.

Membership expires in Redis time, so the workers' own clocks never matter. A
member that stops renewing (it died) drops out after lease_ms; the survivors
then divide its partitions among themselves.

KEYS[1]  workers  sorted set: consumer -> when its membership expires (Redis ms)

ARGV[1]  consumer
ARGV[2]  lease_ms, or 0 to leave

Reply: the live members, in name order.
]]

local members_key = KEYS[1]
local time = redis.call("TIME")
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if tonumber(ARGV[2]) > 0 then
  redis.call("ZADD", members_key, now + tonumber(ARGV[2]), ARGV[1])
else
  redis.call("ZREM", members_key, ARGV[1])
end
redis.call("ZREMRANGEBYSCORE", members_key, "-inf", now)
local live = redis.call("ZRANGE", members_key, 0, -1)
table.sort(live)
return live
