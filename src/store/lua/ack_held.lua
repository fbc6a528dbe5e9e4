-- Acknowledges the entries one consumer holds, and says for each id what happened, so that a
-- client doing exactly-once work learns which of its acks took: 1 acknowledged, 0 not pending
-- (never delivered, or acknowledged already), -1 held by another consumer (its deadline passed
-- and the group gave it to someone else: the work on it is a duplicate).
-- KEYS[1] stream; ARGV: group, consumer, ids...
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local outcomes, mine = {}, {}
for i = 3, #ARGV do
  local row = redis.call('XPENDING', stream, group, ARGV[i], ARGV[i], 1)[1]
  if not row then
    outcomes[#outcomes + 1] = 0
  elseif row[2] ~= consumer then
    outcomes[#outcomes + 1] = -1
  else
    outcomes[#outcomes + 1] = 1
    mine[#mine + 1] = ARGV[i]
  end
end
-- XACK in slices: unpack has a limit on how many values it returns.
for first = 1, #mine, 1000 do
  redis.call('XACK', stream, group, unpack(mine, first, math.min(first + 999, #mine)))
end
return outcomes
