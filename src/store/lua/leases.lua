-- The entries one consumer holds whose lease still runs (idle under the ack deadline), up to a
-- limit, each as {id, idle ms}: what a flow-controlled member's book of leases is rebuilt from.
-- Entries past their deadline are due for redelivery to anyone and are left out: a member
-- holding entries it never received (a read whose reply was lost in a crash or an outage) must
-- not wait at its limit for acks that cannot come.
-- KEYS[1] stream; ARGV: group, consumer, limit, lease (ms)
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local limit, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
-- One walk over the consumer's entries, page by page, stopping at the limit.
local live, start, page_size = {}, '-', 1000
while true do
  local page = redis.call('XPENDING', stream, group, start, '+', page_size, consumer)
  for _, row in ipairs(page) do
    if row[3] < lease then
      live[#live + 1] = {row[1], row[3]}
      if #live >= limit then
        return live
      end
    end
  end
  if #page < page_size then
    return live
  end
  start = '(' .. page[#page][1]
end
