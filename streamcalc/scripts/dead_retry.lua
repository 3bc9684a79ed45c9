--[[
dead_retry.lua: put dead letters back on the input stream, each atomically.

For every given dead-letter ID, the letter's original fields are appended to the
input stream as a new entry (new ID, so the consumer group delivers it again)
and the letter is deleted from the dead-letter stream, in the same script: a
letter is never both retried and kept, nor lost.

The fields a dead letter adds are stripped (`@error`, `@src`, `@node`,
`@deliveries`, `@truncated`), and an original field kept as `@in_<name>`
(because its name collided with those, e.g. the entry's own `@src`) gets its
name back, so the retried entry is exactly the original. STRIP below is the
script side of that layout; the Python side is `DEAD_LETTER_FIELDS` and
`DEAD_ESCAPE` in streamcalc/scripts/__init__.py (and commit.lua writes it).
A letter marked `@truncated` keeps only a prefix of its entry: retrying it
would queue a different entry, so it stays where it is (counted as empty). An entry that had no `@ts` gets its original
entry's time (the millisecond part of the letter's `@src`), so a retried
reading keeps its event time: it may be late, never newer than it was.
A letter that has no original fields left (its entry had been deleted before
processing) cannot be retried and stays where it is.

KEYS[1]  sc:{NS}:dead  dead-letter stream of one partition (sc:{NS:p}:dead), or the routing one
KEYS[2]  sc:{NS}:in    the input stream of the same partition (the routing stream for the routing one)

ARGV     dead-letter IDs

Reply: {retried, missing, empty}
  retried  letters re-queued and deleted
  missing  IDs with no such letter (already retried or purged)
  empty    letters without original fields (or only a prefix of them), left in place
]]

local dead_key, in_key = KEYS[1], KEYS[2]

local STRIP = {["@error"] = true, ["@src"] = true, ["@node"] = true, ["@deliveries"] = true,
  ["@truncated"] = true}

local retried, missing, empty = 0, 0, 0
for _, id in ipairs(ARGV) do
  local found = redis.call("XRANGE", dead_key, id, id)
  if #found == 0 then
    missing = missing + 1
  else
    local fields = found[1][2]
    local args = {}
    local has_ts, src, truncated = false, nil, false
    for i = 1, #fields, 2 do
      local f, v = fields[i], fields[i + 1]
      if string.sub(f, 1, 4) == "@in_" then f = "@" .. string.sub(f, 5) end
      if fields[i] == "@src" then src = v end
      if fields[i] == "@truncated" then truncated = true end
      if not STRIP[fields[i]] then
        if f == "@ts" then has_ts = true end
        args[#args + 1] = f
        args[#args + 1] = v
      end
    end
    local src_ms = src and string.match(src, "^(%d+)-%d+$")
    if #args > 0 and not has_ts and src_ms then
      args[#args + 1] = "@ts"
      args[#args + 1] = src_ms
    end
    if #args == 0 or truncated then
      empty = empty + 1
    else
      redis.call("XADD", in_key, "*", unpack(args))
      redis.call("XDEL", dead_key, id)
      retried = retried + 1
    end
  end
end
return {retried, missing, empty}
