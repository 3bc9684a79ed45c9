--[[
trim.lua: drop the oldest entries of one stream, never one a consumer group still needs.

Computing the floor and trimming happen in one script, so no worker's
XREADGROUP or commit (XACK) can slip in between: an entry that is pending or
not yet delivered in any group at the moment of the call is kept.

The floor of a stream is the minimum over its consumer groups of
  - the group's oldest pending ID (XPENDING summary), and
  - the ID just after the group's last-delivered-id (later entries are undelivered).
Nothing at or above the floor is removed. A stream without groups has no floor,
unless ARGV[1] says that no group means nothing was acknowledged (the input
stream), and then nothing is removed.

Below the floor, an entry goes when it is older than the age cutoff or when it
is one of the oldest (XLEN - max_len) entries. At most `limit` entries go per
call (so one call never blocks Redis for long): `more` = 1 asks for another call.
The trim itself is an exact XTRIM MINID (not `~`), so the floor is exact too.

KEYS[1]  the stream: sc:{NS}:in, sc:{NS}:out or sc:{NS}:dead

ARGV[1]  need_group  "1": without any group nothing may go; "0": without groups, no floor
ARGV[2]  age_cutoff  stream ID; entries below it are old enough to go ("" = no age limit)
ARGV[3]  max_len     keep at most this many entries ("" = no length limit)
ARGV[4]  limit       remove at most this many entries in this call (>= 1)
ARGV[5]  dry_run     "1": count only, remove nothing
ARGV[6]  after       dry runs: entries up to this ID were counted by earlier calls ("" = none)
ARGV[7]  counted     dry runs: how many entries those earlier calls counted ("0" otherwise)

Reply: {removed, more, floor, last}
  removed  entries removed (dry run: that would be removed) by this call
  more     1 when the limit stopped this call: call again; else 0
  floor    the floor ("" = no group restricts this stream; "0-0" = nothing may go)
  last     ID of the last entry removed or counted ("" = none)
]]

local key = KEYS[1]
local need_group = ARGV[1] == "1"
local age_cutoff, max_len = ARGV[2], ARGV[3]
local limit, dry_run = tonumber(ARGV[4]), ARGV[5] == "1"
local after, counted = ARGV[6], tonumber(ARGV[7])

local MAX_SEQ = "18446744073709551615"

-- #include ids

local function incr(s)
  local i = #s
  while i > 0 and string.sub(s, i, i) == "9" do i = i - 1 end
  if i == 0 then return "1" .. string.rep("0", #s) end
  return string.sub(s, 1, i - 1) .. string.char(string.byte(s, i) + 1) .. string.rep("0", #s - i)
end

local function next_id(id)
  local ms, seq = split(id)
  if seq == MAX_SEQ then return incr(ms) .. "-0" end
  return ms .. "-" .. incr(seq)
end

if redis.call("EXISTS", key) == 0 then
  return {0, 0, "", ""}
end

-- the floor: the lowest ID some group still needs
local floor = nil
local groups = redis.call("XINFO", "GROUPS", key)
for _, flat in ipairs(groups) do
  local info = {}
  for i = 1, #flat, 2 do info[flat[i]] = flat[i + 1] end
  local needed = next_id(info["last-delivered-id"])
  local summary = redis.call("XPENDING", key, info["name"])
  if summary[1] > 0 and id_less(summary[2], needed) then needed = summary[2] end
  if floor == nil or id_less(needed, floor) then floor = needed end
end
if floor == nil and need_group then
  return {0, 0, "0-0", ""}
end

-- the entries after `after` and below `stop` (nil = no bound), oldest first
local function scan(stop, count)
  if count < 1 or stop == "0-0" then return {} end
  local start = "-"
  if after ~= "" then start = "(" .. after end
  local stop_arg = "+"
  if stop then stop_arg = "(" .. stop end
  return redis.call("XRANGE", key, start, stop_arg, "COUNT", count)
end

local doomed = {}
if age_cutoff ~= "" then
  local stop = age_cutoff
  if floor and id_less(floor, stop) then stop = floor end
  doomed = scan(stop, limit)
end
if max_len ~= "" then
  local excess = math.min(redis.call("XLEN", key) - tonumber(max_len) - counted, limit)
  if excess > #doomed then
    doomed = scan(floor, excess)
  end
end

local n = #doomed
if n == 0 then return {0, 0, floor or "", ""} end
local last = doomed[n][1]
local more = 0
if n >= limit then more = 1 end
if not dry_run then
  n = redis.call("XTRIM", key, "MINID", next_id(last))
end
return {n, more, floor or "", last}
