-- Delayed delivery for one stream (streamgate): messages wait in a sorted set of tokens by due
-- time and a hash of packed messages beside the stream; moving a due one appends it and forgets
-- it in the same atomic step, so a race between broker instances or a crash never loses or
-- duplicates one.
--
-- KEYS[1] stream, KEYS[2] due (sorted set), KEYS[3] messages (hash)
-- ARGV[1] mode:
--   hold:   due ms, then per message: token, field count, name, value...   → {{}, next due}
--   move:   now ms, limit                                                   → {ids, next due}
--   list:   limit                                     → {{{token, due, {name, value...}}...}, next due}
--   cancel: tokens...                                                       → {cancelled, next due}
-- `next due` is the earliest due time still held, '' when none.
local stream, due, messages = KEYS[1], KEYS[2], KEYS[3]
local mode = ARGV[1]

local function next_due()
  local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
  if first[2] then return first[2] end
  return ''
end

if mode == 'hold' then
  local at = 3
  while at <= #ARGV do
    local token, count = ARGV[at], tonumber(ARGV[at + 1])
    local fields = {}
    for i = 1, 2 * count do fields[i] = ARGV[at + 1 + i] end
    redis.call('ZADD', due, ARGV[2], token)
    redis.call('HSET', messages, token, cmsgpack.pack(fields))
    at = at + 2 + 2 * count
  end
  return {{}, next_due()}
elseif mode == 'move' then
  local ids = {}
  for _, token in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])) do
    local packed = redis.call('HGET', messages, token)
    redis.call('ZREM', due, token)
    redis.call('HDEL', messages, token)
    if packed then
      ids[#ids + 1] = redis.call('XADD', stream, '*', unpack(cmsgpack.unpack(packed)))
    end
  end
  return {ids, next_due()}
elseif mode == 'list' then
  local out = {}
  local rows = redis.call('ZRANGE', due, 0, tonumber(ARGV[2]) - 1, 'WITHSCORES')
  for i = 1, #rows, 2 do
    local packed = redis.call('HGET', messages, rows[i])
    if packed then out[#out + 1] = {rows[i], rows[i + 1], cmsgpack.unpack(packed)} end
  end
  return {out, next_due()}
else
  local cancelled = 0
  for i = 2, #ARGV do
    cancelled = cancelled + redis.call('ZREM', due, ARGV[i])
    redis.call('HDEL', messages, ARGV[i])
  end
  return {cancelled, next_due()}
end
