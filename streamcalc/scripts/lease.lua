--[[
lease.lua: take, renew or give back the lease of one partition (docs/keys-and-partitions.md).

The lease is a string "<consumer> <epoch> <instance>" that expires after
lease_ms unless its owner renews it. Every take draws a new epoch, so a token
names one tenure: a worker that lost the lease and took it again holds a new
token, and commit.lua and fetch.lua refuse anything done under an old one
(fencing). The instance is the id of the worker process, so two processes
that share a consumer name are told apart.

A consumer restarted under its name may take over a lease still held by its
dead predecessor (the supervisor of --processes N reuses its children's names)
without waiting for it to expire: the caller names the instance it found
gone (no connection of it is left on Redis), and the take succeeds only if
the lease is still held under that consumer name by exactly that instance.
Should the old process live on after all, it is fenced by the new epoch.

KEYS[1]  lease   string: "<consumer> <epoch> <instance>"
KEYS[2]  meta    hash of the partition: "lease_epoch:<group>" counts the takes

ARGV[1]  "take", "renew" or "release"
ARGV[2]  group
ARGV[3]  take: consumer; renew, release: the token held
ARGV[4]  lease_ms (take, renew)
ARGV[5]  take: this worker's instance
ARGV[6]  take: the instance of a gone predecessor of the same name, or ""

A value of the lease key that is not a token, or that has no expiry, was not
written by this script; a take replaces it (else a stray SET would stop the
partition for good).

Reply:
  take     {1, the new token}, or {0, the holder's token} when another holds it
  renew    1 when the token still holds the lease (now extended), else 0
  release  1 when the token held the lease (now deleted), else 0
]]

local lease_key, meta_key = KEYS[1], KEYS[2]
local op, group = ARGV[1], ARGV[2]

if op == "take" then
  local holder = redis.call("GET", lease_key)
  local name, instance
  if holder then name, instance = string.match(holder, "^(.*) %d+ ([^ ]+)$") end
  -- A value that is no token, or one that never expires, was not set here (a hand or
  -- a hostile writer): it holds nothing, or it would stop the partition for good.
  if name and redis.call("PTTL", lease_key) >= 0 then
    if ARGV[6] == "" or name ~= ARGV[3] or instance ~= ARGV[6] then return {0, holder} end
  end
  local epoch = redis.call("HINCRBY", meta_key, "lease_epoch:" .. group, 1)
  local token = ARGV[3] .. " " .. epoch .. " " .. ARGV[5]
  redis.call("SET", lease_key, token, "PX", ARGV[4])
  return {1, token}
end

if redis.call("GET", lease_key) ~= ARGV[3] then return 0 end
if op == "renew" then
  redis.call("PEXPIRE", lease_key, ARGV[4])
else
  redis.call("DEL", lease_key)
end
return 1
