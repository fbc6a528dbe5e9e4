-- Moves one dead letter back to its stream as a new entry, atomically (streamgate).
-- KEYS[1] dead-letter stream, KEYS[2] the stream it came from; ARGV[1] dead letter id,
-- ARGV[2] that stream's name as clients know it (as recorded in the dead letter).
-- Returns the new id, or false when the dead letter is no longer there.
local entry = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])[1]
if entry == nil then return false end
local fields = entry[2]
if fields[1] ~= 'dlq.stream' or fields[2] ~= ARGV[2] or fields[9] ~= 'dlq.reason' then
  return redis.error_reply('ERR entry ' .. ARGV[1] .. ' is not a dead letter of ' .. ARGV[2])
end
local args = {KEYS[2], '*'}
for i = 11, #fields do args[#args + 1] = fields[i] end
local id = redis.call('XADD', unpack(args))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
