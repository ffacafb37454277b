"""The Lua scripts of the Redis backend, loaded once and called by SHA.

Every script reads the time from Redis (`TIME`), never from the replica, so replicas with
skewed clocks still share one timeline. A script's semantics are tied to `VERSION`, which is
part of every key name: a change of script that changes what a key holds bumps it, and the
old keys are simply left to expire.
"""

from __future__ import annotations

import hashlib
from typing import Any

from redis.exceptions import NoScriptError

VERSION = "v1"

# GCRA with burst = per_minute (N at once from idle, then one every 60/N s), as in
# `modelrouter.state.memory.gcra`. `cost` units are taken at once; `force` takes them even
# over the limit (capped at a full bucket): used to hand local consumption back after an
# outage. Returns {allowed, retry_after, remaining, ahead}: `ahead` is how far the bucket's TAT
# is ahead of now afterwards (the usage it holds, in seconds of the window); the fractional
# figures are strings, since Lua numbers become integers in a reply.
GCRA = """
local per_minute = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local force = ARGV[3] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = 60 / per_minute
local window = 60
local tat = tonumber(redis.call('GET', KEYS[1])) or now
-- Clamp the elapsed time both ways: an idle bucket is simply full, and a TAT from a
-- clock that has since moved back (failover to another server) is at most a full bucket.
if tat < now then tat = now end
if tat > now + window then tat = now + window end
local new_tat = tat + cost * interval
local over = new_tat - now - window
if over > 1e-9 then
  if not force then
    return {0, string.format('%.6f', over), 0, string.format('%.6f', tat - now)}
  end
  new_tat = now + window
end
-- The key lives exactly until the bucket is full again.
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX',
           math.max(1, math.ceil((new_tat - now) * 1000)))
return {1, '0', math.floor((window - (new_tat - now)) / interval + 1e-9),
        string.format('%.6f', new_tat - now)}
"""

# Leases: a sorted set of token -> expiry (server time). When the slots look all taken,
# expired leases are pruned and the count taken again (as `MemoryState` does): the same
# decisions as pruning first, without a range removal per stream. The key lives as long as its
# longest lease. Returns 1 when taken, 0 when all slots are held.
LEASE_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[2])
local limit = tonumber(ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= limit then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
local ttl_ms = math.ceil(ttl * 1000)
if redis.call('PTTL', KEYS[1]) < ttl_ms then redis.call('PEXPIRE', KEYS[1], ttl_ms) end
return 1
"""

# Renew a lease still held (or add one handed over from local state when ARGV[3] == '1').
# Returns 1 when the lease is held afterwards, 0 when it had already been lost.
LEASE_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[2])
if ARGV[3] ~= '1' and not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
local ttl_ms = math.ceil(ttl * 1000)
if redis.call('PTTL', KEYS[1]) < ttl_ms then redis.call('PEXPIRE', KEYS[1], ttl_ms) end
return 1
"""

# A provider's health: written and published in one step, so every replica sees the writes in
# the same order. A failure never lowers what is stored (two replicas seeing the same outage
# escalate the backoff once; a slower replica cannot shorten a longer blacklist); a success
# (failures = 0) resets it. `version` orders the records for the subscribers.
# ARGV: failures, blacklisted_until, reason ('' = none), channel, provider, ttl seconds.
HEALTH_SAVE = """
local failures = tonumber(ARGV[1])
local until_ = ARGV[2]
local reason = ARGV[3]
if failures > 0 then
  local cur = redis.call('HMGET', KEYS[1], 'failures', 'until', 'reason')
  local cur_failures = tonumber(cur[1]) or 0
  if cur_failures > failures then
    failures = cur_failures
    reason = cur[3] or reason
  end
  if cur[2] and tonumber(cur[2]) > tonumber(until_) then until_ = cur[2] end
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'failures', failures, 'until', until_, 'reason', reason)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
local record = {failures, until_, reason, version, ARGV[5]}
redis.call('PUBLISH', ARGV[4], cjson.encode(record))
return record
"""


class Script:
    """One Lua script: EVALSHA, and SCRIPT LOAD again when the server answers NOSCRIPT
    (after a restart, a failover or SCRIPT FLUSH)."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


class Scripts:
    """All the scripts of the backend, loaded on connect."""

    def __init__(self) -> None:
        self.gcra = Script(GCRA)
        self.lease_acquire = Script(LEASE_ACQUIRE)
        self.lease_renew = Script(LEASE_RENEW)
        self.health_save = Script(HEALTH_SAVE)

    async def load(self, client: Any) -> None:
        for script in (self.gcra, self.lease_acquire, self.lease_renew, self.health_save):
            await client.script_load(script.source)
