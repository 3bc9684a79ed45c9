--[[
lease.lua: take, renew or give back the lease of one partition (S12).

The lease is a string "<consumer> <epoch>" that expires after lease_ms unless
its owner renews it. Every take draws a new epoch, so a token names one tenure:
a worker that lost the lease and took it again holds a new token, and commit.lua
refuses any commit made under an old one (fencing).

A consumer may take a lease still held under its own name: that is the same
consumer restarted (the supervisor of --processes N reuses its children's
names), and the old process, should it still run, is fenced by the new epoch.

KEYS[1]  lease   string: "<consumer> <epoch>"
KEYS[2]  meta    hash of the partition: "lease_epoch:<group>" counts the takes

ARGV[1]  "take", "renew" or "release"
ARGV[2]  group
ARGV[3]  consumer (take) or the token held (renew, release)
ARGV[4]  lease_ms (take, renew)

Reply:
  take     the new token, or false when another worker holds the lease
  renew    1 when the token still holds the lease (now extended), else 0
  release  1 when the token held the lease (now deleted), else 0
]]

local lease_key, meta_key = KEYS[1], KEYS[2]
local op, group = ARGV[1], ARGV[2]

if op == "take" then
  local holder = redis.call("GET", lease_key)
  if holder and string.sub(holder, 1, #ARGV[3] + 1) ~= ARGV[3] .. " " then return false end
  local epoch = redis.call("HINCRBY", meta_key, "lease_epoch:" .. group, 1)
  local token = ARGV[3] .. " " .. epoch
  redis.call("SET", lease_key, token, "PX", ARGV[4])
  return token
end

if redis.call("GET", lease_key) ~= ARGV[3] then return 0 end
if op == "renew" then
  redis.call("PEXPIRE", lease_key, ARGV[4])
else
  redis.call("DEL", lease_key)
end
return 1
