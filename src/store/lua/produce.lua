-- A Produce request that is all-or-nothing, deduplicated, or both (streamgate). Atomic: the
-- look at the dedupe keys and the stream's top, and every XADD, are one step.
--
-- KEYS[1] stream
-- ARGV: atomic (0/1), NOMKSTREAM (0/1), dedupe key prefix ('' for none), dedupe window ms,
--       n, then n trim arguments for each XADD (MAXLEN|MINID, =|~, threshold[, LIMIT, l]),
--       then per message: id ('*', 'ms-*' or 'ms-seq'), dedupe key ('' for none), field count,
--       then name, value pairs.
-- Returns the ids in message order (a duplicate's is the first message's).
local stream = KEYS[1]
local atomic, nomkstream = ARGV[1] == '1', ARGV[2] == '1'
local prefix, window = ARGV[3], ARGV[4]
local ntrim = tonumber(ARGV[5])
local trim = {}
for i = 1, ntrim do trim[i] = ARGV[5 + i] end

local messages = {}
local at = 6 + ntrim
while at <= #ARGV do
  local id, key, nfields = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
  messages[#messages + 1] = {id = id, key = key, first = at + 3, count = nfields}
  at = at + 3 + 2 * nfields
end

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
  if ms then return tonumber(ms), tonumber(seq) end
  ms = string.match(id, '^(%d+)%-%*$')
  if ms then return tonumber(ms), nil end
  return nil, nil
end

local function remembered(message)
  if prefix == '' or message.key == '' then return nil end
  return redis.call('GET', prefix .. message.key)
end

if atomic then
  -- Everything that could fail part-way is checked first.
  local exists = redis.call('EXISTS', stream) == 1
  if nomkstream and not exists then return redis.error_reply('ERR no such key') end
  local top_ms, top_seq = 0, 0
  if exists then
    top_ms, top_seq = parse(redis.call('XINFO', 'STREAM', stream)['last-generated-id'] or '0-0')
  end
  local seen = {}
  for _, message in ipairs(messages) do
    local fresh = remembered(message) == nil and not (message.key ~= '' and seen[message.key])
    if message.key ~= '' then seen[message.key] = true end
    if fresh and message.id ~= '*' then
      local ms, seq = parse(message.id)
      local ok = ms > top_ms or (ms == top_ms and (seq == nil or seq > top_seq))
      if not ok then
        return redis.error_reply(
          'ERR The ID specified in XADD is equal or smaller than the target stream top item')
      end
      if seq == nil then
        if ms == top_ms then seq = top_seq + 1 else seq = 0 end
      end
      top_ms, top_seq = ms, seq
    elseif fresh then
      -- `*`: Redis takes the script's clock, or the top's millisecond with the next sequence.
      local time = redis.call('TIME')
      local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
      if now > top_ms then top_ms, top_seq = now, 0 else top_seq = top_seq + 1 end
    end
  end
end

local ids = {}
for i, message in ipairs(messages) do
  local id = remembered(message)
  if not id then
    local args = {'XADD', stream}
    if nomkstream then args[#args + 1] = 'NOMKSTREAM' end
    for _, a in ipairs(trim) do args[#args + 1] = a end
    args[#args + 1] = message.id
    for j = message.first, message.first + 2 * message.count - 1 do args[#args + 1] = ARGV[j] end
    id = redis.call(unpack(args))
    if not id then return redis.error_reply('ERR no such key') end
    if prefix ~= '' and message.key ~= '' then
      redis.call('SET', prefix .. message.key, id, 'PX', window)
    end
  end
  ids[i] = id
end
return ids
