-- Moves pending entries to a consumer and sets their idle time (streamgate: nack, extend).
--
-- KEYS[1] stream
-- ARGV: group, holder ('' = any), target consumer, idle ms (-1 = horizon - backoff(count)),
--       horizon ms, backoff min ms, backoff max ms, ids...
-- Returns the ids moved: those pending, held by the holder, and whose message still exists.
local stream, group, holder, target = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local idle, horizon = tonumber(ARGV[4]), tonumber(ARGV[5])
local backoff_min, backoff_max = tonumber(ARGV[6]), tonumber(ARGV[7])
local moved = {}
for i = 8, #ARGV do
  local id = ARGV[i]
  local row = redis.call('XPENDING', stream, group, id, id, 1)[1]
  if row and (holder == '' or row[2] == holder) then
    local set = idle
    if set < 0 then
      set = math.max(0, horizon - math.min(backoff_max, backoff_min * 2 ^ math.min(row[4] - 1, 62)))
    end
    local got = redis.call('XCLAIM', stream, group, target, 0, id, 'IDLE', math.floor(set), 'JUSTID')
    if got[1] then moved[#moved + 1] = got[1] end
  end
end
return moved
