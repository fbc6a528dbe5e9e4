-- One application of a stream's retention policy (streamgate). Atomic: no group can read, and no
-- broker can deliver, between the look at the groups and the trims, so `acked` never deletes an
-- entry some group has not read and acknowledged.
--
-- KEYS[1] stream
-- ARGV: acked (0/1), age cut id ('' for none), keep pending (0/1), max length ('' for none)
-- Returns {trimmed as acked, trimmed by age, trimmed by length}.
local stream = KEYS[1]
local acked, age_cut, keep_pending, max_len = ARGV[1] == '1', ARGV[2], ARGV[3] == '1', ARGV[4]
if redis.call('EXISTS', stream) == 0 then return {0, 0, 0} end

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function lower(a, b)
  if a == nil then return b end
  if b == nil then return a end
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  if ams < bms or (ams == bms and aseq < bseq) then return a end
  return b
end
local function after(id)
  local ms, seq = parse(id)
  return string.format('%d-%d', ms, seq + 1)
end

-- Per group: the lowest id it still needs (its first pending entry, or the first it has not
-- read) and its lowest pending id.
local needed, lowest_pending
local groups = redis.call('XINFO', 'GROUPS', stream)
for _, group in ipairs(groups) do
  local name, last, pending
  for i = 1, #group, 2 do
    if group[i] == 'name' then name = group[i + 1]
    elseif group[i] == 'last-delivered-id' then last = group[i + 1]
    elseif group[i] == 'pending' then pending = group[i + 1] end
  end
  local first_pending
  if pending > 0 then
    first_pending = redis.call('XPENDING', stream, name)[2]
  end
  needed = lower(needed, lower(first_pending, after(last)))
  lowest_pending = lower(lowest_pending, first_pending)
end

local by_acked, by_age, by_len = 0, 0, 0
if acked and needed then
  by_acked = redis.call('XTRIM', stream, 'MINID', needed)
end
if age_cut ~= '' then
  local cut = age_cut
  if keep_pending then cut = lower(cut, lowest_pending) end
  by_age = redis.call('XTRIM', stream, 'MINID', cut)
end
if max_len ~= '' then
  by_len = redis.call('XTRIM', stream, 'MAXLEN', max_len)
end
return {by_acked, by_age, by_len}
