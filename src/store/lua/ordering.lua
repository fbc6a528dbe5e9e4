-- Ordered delivery for one consumer group on one stream (streamgate): per ordering key, one
-- message outstanding at a time; the later ones wait in the group's pending list, held by the
-- held consumer (never due), until the one ahead of them is settled. Atomic, so two broker
-- instances admitting or releasing the same key never both let a message through.
--
-- KEYS[1] stream, KEYS[2] heads (hash: ordering key -> id of its outstanding message),
-- KEYS[3] held (sorted set, score 0: key .. '\0' .. zero-padded ms .. '-' .. zero-padded seq)
-- ARGV: mode ('read' | 'ack' | 'release' | 'heal'), group, held consumer, parked consumer,
--       parked horizon ms, the field that holds the ordering key, then
--   read:    consumer, count: XREADGROUP `>` and admit what it returns, in one step
--            (returns a fourth element: the entries kept, {id, fields}...)
--   ack:     holder ('' = any), ids: XACK and release in one step, so that no broker can
--            die and no reply be lost between the two (returns a fifth element: per id
--            1 acknowledged, 0 not pending, -1 held by another consumer)
--   release: ids no longer pending (dead-lettered, lost)
--   heal:    HSCAN cursor, page size
-- Returns {held ids (read), promoted, heal cursor or '' for none[, entries kept (read)
--          [, ack outcomes (ack)]]}.
local stream, heads, held = KEYS[1], KEYS[2], KEYS[3]
local mode, group, held_by, parked = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local horizon, field = ARGV[5], ARGV[6]

local function pad(n) return string.rep('0', 20 - #n) .. n end
local function member(key, id)
  local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
  return key .. '\0' .. pad(ms) .. '-' .. pad(seq)
end
local function unpad(n) return (string.gsub(n, '^0+(%d)', '%1')) end
local function id_of(m)
  local ms, seq = string.match(m, '%z(%d+)%-(%d+)$')
  return unpad(ms) .. '-' .. unpad(seq)
end
local function owner(id)
  local row = redis.call('XPENDING', stream, group, id, id, 1)[1]
  if row then return row[2] end
  return nil
end

local promoted = 0
-- Makes the key's head a message that is still pending: while it is not, the next held message
-- of the key becomes the head and goes to the parked consumer, due at once (the sweep delivers
-- it with its real delivery count). Returns the head, nil when the key has none.
local function settle(key)
  local head = redis.call('HGET', heads, key)
  while head and not owner(head) do
    local nxt = redis.call('ZRANGEBYLEX', held, '[' .. key .. '\0', '(' .. key .. '\1', 'LIMIT', 0, 1)[1]
    if nxt then
      redis.call('ZREM', held, nxt)
      head = id_of(nxt)
      redis.call('HSET', heads, key, head)
      if owner(head) == held_by then
        redis.call('XCLAIM', stream, group, parked, 0, head, 'IDLE', horizon, 'JUSTID')
        promoted = promoted + 1
      end
    else
      redis.call('HDEL', heads, key)
      head = nil
    end
  end
  return head
end

-- Admits one entry just read: true when it is held back behind its key's head.
local function admit(id, key)
  local head = settle(key)
  if head and head ~= id then
    redis.call('ZADD', held, 0, member(key, id))
    -- RETRYCOUNT 0: its first real delivery, after release, counts as its first.
    redis.call('XCLAIM', stream, group, held_by, 0, id, 'RETRYCOUNT', 0, 'JUSTID')
    return true
  end
  redis.call('HSET', heads, key, id)
  return false
end

if mode == 'read' then
  -- Reading and admitting in one step: two members reading at once cannot admit a key's later
  -- message before its earlier one.
  local reply = redis.call('XREADGROUP', 'GROUP', group, ARGV[7], 'COUNT', ARGV[8],
    'STREAMS', stream, '>')
  local kept, held_ids = {}, {}
  if reply then
    for _, entry in ipairs(reply[1][2]) do
      local id, fields = entry[1], entry[2]
      local key
      for j = 1, #fields, 2 do
        if fields[j] == field then key = fields[j + 1] break end
      end
      if key and admit(id, key) then
        held_ids[#held_ids + 1] = id
      else
        kept[#kept + 1] = entry
      end
    end
  end
  return {held_ids, promoted, '', kept}
elseif mode == 'ack' or mode == 'release' then
  local heal, first, holder, outcomes = '', 7, nil, {}
  if mode == 'ack' then first, holder = 8, ARGV[7] end
  for i = first, #ARGV do
    local id, settled = ARGV[i], true
    if holder then
      local who = owner(id)
      if who == nil then
        outcomes[#outcomes + 1], settled = 0, false
      elseif holder ~= '' and who ~= holder then
        outcomes[#outcomes + 1], settled = -1, false
      else
        redis.call('XACK', stream, group, id)
        outcomes[#outcomes + 1] = 1
      end
    end
    if settled then
      local entry = redis.call('XRANGE', stream, id, id)[1]
      if entry then
        local fields = entry[2]
        for j = 1, #fields, 2 do
          if fields[j] == field then
            settle(fields[j + 1])
            break
          end
        end
      else
        -- Deleted: its key cannot be read; a heal pass finds it.
        heal = '0'
      end
    end
  end
  return {{}, promoted, heal, {}, outcomes}
else
  local page = redis.call('HSCAN', heads, ARGV[7], 'COUNT', ARGV[8])
  local fields = page[2]
  for j = 1, #fields, 2 do settle(fields[j]) end
  local next_cursor = page[1]
  if next_cursor == '0' then next_cursor = '' end
  return {{}, promoted, next_cursor}
end
