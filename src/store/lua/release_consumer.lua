-- Gives every entry a consumer holds back to the group (to the parked consumer, due at once)
-- and optionally deletes the consumer, in one step: XGROUP DELCONSUMER alone would leave its
-- entries in no consumer's list, where nobody can claim them (streamgate).
--
-- KEYS[1] stream
-- ARGV: group, consumer, parked consumer, parked horizon ms, delete (0/1),
--       only if idle at least this many ms (-1 = always)
-- Returns {handed back, lost (message deleted), deleted (0/1)}.
local stream, group, consumer, parked = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local horizon, delete, min_idle = ARGV[4], ARGV[5] == '1', tonumber(ARGV[6])
if min_idle >= 0 then
  local idle = nil
  for _, info in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
    local name, this_idle
    for j = 1, #info, 2 do
      if info[j] == 'name' then name = info[j + 1] elseif info[j] == 'idle' then this_idle = info[j + 1] end
    end
    if name == consumer then idle = this_idle end
  end
  if idle == nil or idle < min_idle then return {0, 0, 0} end
end
local handed, lost = 0, 0
while true do
  local rows = redis.call('XPENDING', stream, group, '-', '+', 1000, consumer)
  if #rows == 0 then break end
  local args = {stream, group, parked, 0}
  for _, row in ipairs(rows) do args[#args + 1] = row[1] end
  args[#args + 1] = 'IDLE'
  args[#args + 1] = horizon
  args[#args + 1] = 'JUSTID'
  local got = #redis.call('XCLAIM', unpack(args))
  handed = handed + got
  -- XCLAIM drops entries whose message is gone from the pending list and does not return them.
  lost = lost + #rows - got
end
local deleted = 0
if delete then
  redis.call('XGROUP', 'DELCONSUMER', stream, group, consumer)
  deleted = 1
end
return {handed, lost, deleted}
