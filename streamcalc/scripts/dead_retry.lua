--[[
dead_retry.lua: put dead letters back on the input stream, each atomically.

For every given dead-letter ID, the letter's original fields are appended to the
input stream as a new entry (new ID, so the consumer group delivers it again)
and the letter is deleted from the dead-letter stream, in the same script: a
letter is never both retried and kept, nor lost.

The fields a dead letter adds are stripped (`@error`, `@src`, `@node`,
`@deliveries`); the original entry's provenance, kept as `@in_src`, becomes
`@src` again. A letter that has no original fields left (its entry had been
deleted before processing) cannot be retried and stays where it is.

KEYS[1]  sc:{NS}:dead  dead-letter stream
KEYS[2]  sc:{NS}:in    input stream

ARGV     dead-letter IDs

Reply: {retried, missing, empty}
  retried  letters re-queued and deleted
  missing  IDs with no such letter (already retried or purged)
  empty    letters without original fields, left in place
]]

local dead_key, in_key = KEYS[1], KEYS[2]

local STRIP = {["@error"] = true, ["@src"] = true, ["@node"] = true, ["@deliveries"] = true}

local retried, missing, empty = 0, 0, 0
for _, id in ipairs(ARGV) do
  local found = redis.call("XRANGE", dead_key, id, id)
  if #found == 0 then
    missing = missing + 1
  else
    local fields = found[1][2]
    local args = {}
    for i = 1, #fields, 2 do
      local f, v = fields[i], fields[i + 1]
      if f == "@in_src" then f = "@src" end
      if not STRIP[fields[i]] then
        args[#args + 1] = f
        args[#args + 1] = v
      end
    end
    if #args == 0 then
      empty = empty + 1
    else
      redis.call("XADD", in_key, "*", unpack(args))
      redis.call("XDEL", dead_key, id)
      retried = retried + 1
    end
  end
end
return {retried, missing, empty}
