-- One step of a group's redelivery sweep (streamgate). Atomic: no other client, and so no other
-- broker instance, runs between the look at an entry and what is done with it.
--
-- KEYS[1] source stream, KEYS[2] dead-letter stream
-- ARGV: group, claiming consumer, parked consumer, ack deadline ms, backoff min ms,
--       backoff max ms, parked horizon ms, max deliveries (0 = no limit), cursor, scan, claim,
--       the stream's name as clients know it (recorded in dead letters; the key may be prefixed),
--       the held consumer (its entries wait behind their ordering key's head: never due)
-- Returns {next cursor, {{id, fields, delivery count}...}, {dead-lettered ids}, {lost ids}}.
local stream, dlq = KEYS[1], KEYS[2]
local group, consumer, parked = ARGV[1], ARGV[2], ARGV[3]
local deadline, backoff_min, backoff_max = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local horizon, max_deliveries = tonumber(ARGV[7]), tonumber(ARGV[8])
local cursor, scan, want = ARGV[9], tonumber(ARGV[10]), tonumber(ARGV[11])
local label, held_by = ARGV[12], ARGV[13]

local rows = redis.call('XPENDING', stream, group, 'IDLE', math.min(deadline, horizon),
  cursor, '+', scan)
local claimed, dead, lost = {}, {}, {}
local next_cursor = '-'
for _, row in ipairs(rows) do
  local id, owner, idle, count = row[1], row[2], row[3], row[4]
  if #claimed >= want then
    next_cursor = id
    break
  end
  local due
  if owner == held_by then
    due = false
  elseif owner == parked then
    due = idle >= horizon
  else
    due = idle >= deadline + math.min(backoff_max, backoff_min * 2 ^ math.min(count - 1, 62))
  end
  if due then
    local entry = redis.call('XRANGE', stream, id, id)[1]
    if entry == nil then
      -- Deleted or trimmed while pending: nothing to deliver; forget it, and say so.
      redis.call('XACK', stream, group, id)
      lost[#lost + 1] = id
    elseif max_deliveries > 0 and count >= max_deliveries then
      local why
      if owner == parked then why = 'nacked or given back' else why = 'not acknowledged within the ack deadline' end
      local reason = 'delivered ' .. count .. ' times (max_deliveries ' .. max_deliveries ..
        '); last delivery ' .. why
      local args = {dlq, '*', 'dlq.stream', label, 'dlq.id', id, 'dlq.group', group,
        'dlq.delivery_count', tostring(count), 'dlq.reason', reason}
      for _, v in ipairs(entry[2]) do args[#args + 1] = v end
      redis.call('XADD', unpack(args))
      redis.call('XACK', stream, group, id)
      dead[#dead + 1] = id
    else
      local got = redis.call('XCLAIM', stream, group, consumer, 0, id)[1]
      if got then claimed[#claimed + 1] = {got[1], got[2], count + 1} end
    end
  end
end
if next_cursor == '-' and #rows == scan and #rows > 0 then
  next_cursor = '(' .. rows[#rows][1]
end
return {next_cursor, claimed, dead, lost}
