-- Acknowledges the entries one consumer holds, and says for each id what happened, so that a
-- client doing exactly-once work learns which of its acks took: 1 acknowledged, 0 not pending
-- (never delivered, or acknowledged already), -1 held by another consumer (its deadline passed
-- and the group gave it to someone else: the work on it is a duplicate).
-- KEYS[1] stream; ARGV: group, consumer, lowest id, highest id, ids...
-- The usual ack is of ids the consumer holds side by side in the pending list: one XPENDING of
-- the consumer's entries between the lowest and highest id finds them all; only ids it does not
-- find are looked up one by one.
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local ids = {}
for i = 5, #ARGV do
  ids[#ids + 1] = ARGV[i]
end
local held = {}
for _, row in ipairs(redis.call('XPENDING', stream, group, ARGV[3], ARGV[4], #ids + 100, consumer)) do
  held[row[1]] = true
end
local outcomes, mine = {}, {}
for i, id in ipairs(ids) do
  local owner = consumer
  if not held[id] then
    local row = redis.call('XPENDING', stream, group, id, id, 1)[1]
    owner = row and row[2]
  end
  if owner == nil then
    outcomes[i] = 0
  elseif owner ~= consumer then
    outcomes[i] = -1
  else
    outcomes[i] = 1
    mine[#mine + 1] = id
  end
end
-- XACK in slices: unpack has a limit on how many values it returns.
for first = 1, #mine, 1000 do
  redis.call('XACK', stream, group, unpack(mine, first, math.min(first + 999, #mine)))
end
return outcomes
