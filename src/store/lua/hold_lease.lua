-- Takes a lease for a holder, or renews it when the holder has it already: one broker instance
-- at a time does a shared job (a group's sweep). Returns 1 when the holder has the lease now.
-- KEYS[1] lease; ARGV: holder, ttl (ms)
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
