-- How many entries one consumer holds, counting up to a limit (streamgate flow control).
-- KEYS[1] stream; ARGV: group, consumer, limit
return #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', tonumber(ARGV[3]), ARGV[2])
