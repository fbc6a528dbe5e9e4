-- Acknowledges ids one by one and says for each whether it was pending (1) or not (0): exact
-- confirmations for a consumer that does not need to know who held them.
-- KEYS[1] stream; ARGV: group, ids...
local stream, group = KEYS[1], ARGV[1]
local outcomes = {}
for i = 2, #ARGV do
  outcomes[i - 1] = redis.call('XACK', stream, group, ARGV[i])
end
return outcomes
