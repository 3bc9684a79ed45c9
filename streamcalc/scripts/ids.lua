-- ids.lua: comparisons of stream IDs and timestamps as decimal digit strings, included
-- by the scripts that need them (a line "-- #include ids" is replaced by this file).
-- Lua's numbers are doubles: IDs and ts beyond 2^53 would compare wrongly as numbers.

local function split(id)
  return string.match(id, "^(%d+)-(%d+)$")
end

-- decimal strings without leading zeros, of any length
local function num_less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end

local function id_less(a, b)
  local a_ms, a_seq = split(a)
  local b_ms, b_seq = split(b)
  if a_ms ~= b_ms then return num_less(a_ms, b_ms) end
  return num_less(a_seq, b_seq)
end
