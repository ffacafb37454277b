"""Budgets in Redis: reserve and settle as Lua scripts on integer nano-dollars, shared by every
replica (see `ledger.py` for the contract).

- Keys, per account and period, share the account's hash tag (one Redis Cluster slot):
  `<prefix>:{<account>}:budget:<period>:v1`, a hash of `spent`, `held`, `loaded` and each
  hold's amount (`h:<token>`), and `<prefix>:{<account>}:holds:<period>:v1`, a sorted set of
  the holds by expiry (Redis' clock). Expired holds are pruned by the next reservation.
- The counters of a period that ends are kept a day past its end (a late settle still lands),
  then expire; `total` never does.
- Redis away (or slow): the backend's breaker is open and this ledger serves from a local one
  whose budget is this replica's share (REDIS_EXPECTED_REPLICAS) of what was left when Redis
  last answered. What was spent locally, and the settles of holds taken in Redis, are owed and
  handed over once Redis answers again, before the next reservation.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

import structlog

from modelrouter.state.ledger import UNLOADED, Balance, Hold, MemoryLedger, Outcome
from modelrouter.state.scripts import VERSION, Script

if TYPE_CHECKING:
    from modelrouter.state.redis import RedisState

log = structlog.get_logger("modelrouter.state")
LINGER: Final = 86_400  # seconds a period's counters outlive its end

# ARGV: budget, amount, ttl ms, token, expire-at (epoch s, 0: never), unchecked ('1').
# Returns {status, spent, held}: status 1 held, 0 refused, -1 not loaded.
RESERVE = """
if ARGV[6] ~= '1' and redis.call('HEXISTS', KEYS[1], 'loaded') == 0 then
  return {-1, 0, 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
if #expired > 0 then
  local freed = 0
  for _, token in ipairs(expired) do
    freed = freed + (tonumber(redis.call('HGET', KEYS[1], 'h:' .. token)) or 0)
    redis.call('HDEL', KEYS[1], 'h:' .. token)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  redis.call('HINCRBY', KEYS[1], 'held', -freed)
end
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local held = tonumber(redis.call('HGET', KEYS[1], 'held') or '0')
local amount = tonumber(ARGV[2])
if spent + held + amount > tonumber(ARGV[1]) then return {0, spent, held} end
redis.call('HINCRBY', KEYS[1], 'held', amount)
redis.call('HSET', KEYS[1], 'h:' .. ARGV[4], amount)
local until_ = now + tonumber(ARGV[3])
redis.call('ZADD', KEYS[2], until_, ARGV[4])
-- The holds live as long as the counters whose `held` they make up (an empty set is gone).
if ARGV[5] ~= '0' then
  redis.call('EXPIREAT', KEYS[1], ARGV[5])
  redis.call('EXPIREAT', KEYS[2], ARGV[5])
end
return {1, spent, held + amount}
"""

# ARGV: token ('' = spend without a hold), nanos, expire-at (0: never). Returns spent.
SETTLE = """
if ARGV[1] ~= '' then
  local amount = tonumber(redis.call('HGET', KEYS[1], 'h:' .. ARGV[1]))
  if amount then
    redis.call('HDEL', KEYS[1], 'h:' .. ARGV[1])
    redis.call('HINCRBY', KEYS[1], 'held', -amount)
    redis.call('ZREM', KEYS[2], ARGV[1])
  end
end
local spent = redis.call('HINCRBY', KEYS[1], 'spent', ARGV[2])
if ARGV[3] ~= '0' then redis.call('EXPIREAT', KEYS[1], ARGV[3]) end
return spent
"""

# ARGV: nanos, expire-at. Adds the recorded spend once per period's life in Redis.
LOAD = """
if redis.call('HEXISTS', KEYS[1], 'loaded') == 1 then return 0 end
redis.call('HINCRBY', KEYS[1], 'spent', ARGV[1])
redis.call('HSET', KEYS[1], 'loaded', '1')
if ARGV[2] ~= '0' then redis.call('EXPIREAT', KEYS[1], ARGV[2]) end
return 1
"""

_RESERVE, _SETTLE, _LOAD = Script(RESERVE), Script(SETTLE), Script(LOAD)


def _expiry(expire_at: float | None) -> str:
    return "0" if expire_at is None else str(int(expire_at) + LINGER)


class RedisLedger:
    def __init__(self, state: RedisState) -> None:
        self._state = state
        self._local = MemoryLedger()
        self._seen: dict[tuple[str, str], int] = {}  # what was left when Redis last said
        self._owed_settles: list[tuple[Hold, int, str]] = []
        self._owed_spend: dict[tuple[str, str], tuple[int, str]] = {}
        self._tokens = 0
        self._was_up = True
        self._repaying: asyncio.Lock | None = None

    def _keys(self, account: str, period: str) -> list[str]:
        base = f"{self._state.prefix}:{{{account}}}"
        return [f"{base}:budget:{period}:{VERSION}", f"{base}:holds:{period}:{VERSION}"]

    # -- reserve -------------------------------------------------------------------------------
    async def reserve(
        self,
        account: str,
        period: str,
        *,
        budget: int,
        amount: int,
        ttl: float,
        expire_at: float | None,
        unchecked: bool = False,
    ) -> Outcome:
        state = self._state
        if state.up:
            if self._owed_settles or self._owed_spend:
                await self._repay()
            self._tokens += 1
            token = f"{id(self):x}:{self._tokens}"
            args = [budget, amount, int(ttl * 1000), token, _expiry(expire_at)]
            keys = self._keys(account, period)
            sent = state.fast.script(_RESERVE, keys, [*args, "1" if unchecked else "0"])
            try:
                # Shielded: a caller cancelled meanwhile (a client gone) still learns the
                # reply, and gives back a hold it will never settle.
                reply = await asyncio.shield(sent)
            except asyncio.CancelledError:
                hold = Hold(account, period, token, amount, shared=True)
                sent.add_done_callback(lambda done: self._orphaned(done, hold, expire_at))
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: the local share decides
                state.failed("budget_reserve", exc)
            else:
                status, spent, held = (int(x) for x in reply)
                left = budget - spent - held
                self._seen[account, period] = left
                if status < 0:
                    return UNLOADED
                if status == 0:
                    return Outcome("refused", max(left, 0))
                return Outcome("held", left, Hold(account, period, token, amount, shared=True))
        return self._reserve_locally(account, period, budget=budget, amount=amount, ttl=ttl)

    def _reserve_locally(
        self, account: str, period: str, *, budget: int, amount: int, ttl: float
    ) -> Outcome:
        """This replica's share of what was left (of the whole budget, if never seen)."""
        if self._was_up:
            self._was_up = False
            self._local.forget_spend()
        left = self._seen.get((account, period), budget)
        share = max(left, 0) // max(self._state.replicas, 1)
        return self._local.take(
            account, period, budget=share, amount=amount, ttl=ttl, unchecked=True
        )

    def _orphaned(self, done: asyncio.Future[Any], hold: Hold, expire_at: float | None) -> None:
        """The reply to a reservation whose caller was cancelled: release what it held."""
        if not done.cancelled() and done.exception() is None and int(done.result()[0]) == 1:
            self.settle(hold, 0, expire_at=expire_at)

    # -- settle --------------------------------------------------------------------------------
    def settle(self, hold: Hold, nanos: int, *, expire_at: float | None) -> None:
        expiry = _expiry(expire_at)
        if not hold.shared:
            self._local.settle(hold, nanos)
            self._spend(hold.account, hold.period, nanos, expiry)
            return
        if not self._state.up:
            self._owed_settles.append((hold, nanos, expiry))
            return
        reply = self._state.fast.script(
            _SETTLE, self._keys(hold.account, hold.period), [hold.token, nanos, expiry]
        )
        reply.add_done_callback(lambda done: self._settled(done, hold, nanos, expiry))

    def _spend(self, account: str, period: str, nanos: int, expiry: str) -> None:
        """Spend without a Redis hold: sent now, or owed until Redis is back."""
        if nanos <= 0:
            return
        if self._state.up:
            reply = self._state.fast.script(
                _SETTLE, self._keys(account, period), ["", nanos, expiry]
            )
            hold = Hold(account, period, "", 0, shared=True)
            reply.add_done_callback(lambda done: self._settled(done, hold, nanos, expiry))
            return
        owed, _ = self._owed_spend.get((account, period), (0, expiry))
        self._owed_spend[account, period] = (owed + nanos, expiry)

    def _settled(self, done: asyncio.Future[Any], hold: Hold, nanos: int, expiry: str) -> None:
        if done.cancelled():
            error: BaseException = asyncio.CancelledError()
        elif (found := done.exception()) is not None:
            error = found
        else:
            return
        self._owed_settles.append((hold, nanos, expiry))
        self._state.failed("budget_settle", error)

    async def _repay(self) -> None:
        """Hand over, once, what was settled or spent while Redis was away."""
        if self._repaying is None:
            self._repaying = asyncio.Lock()
        async with self._repaying:
            settles, self._owed_settles = self._owed_settles, []
            spend, self._owed_spend = self._owed_spend, {}
            calls = [
                self._state.fast.script(_SETTLE, self._keys(h.account, h.period), [h.token, n, e])
                for h, n, e in settles
            ]
            calls += [
                self._state.fast.script(_SETTLE, self._keys(a, p), ["", n, e])
                for (a, p), (n, e) in spend.items()
            ]
            results = await asyncio.gather(*calls, return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:  # all owed again: a settle that did land is counted twice (the safe way)
                self._owed_settles += settles
                for key, (nanos, expiry) in spend.items():
                    owed, _ = self._owed_spend.get(key, (0, expiry))
                    self._owed_spend[key] = (owed + nanos, expiry)
                self._state.failed("budget_repay", failed[0])
                return
            self._was_up = True
            log.info("budget_handed_over", settles=len(settles), accounts=len(spend))

    # -- load and read ---------------------------------------------------------------------------
    async def load(self, account: str, period: str, nanos: int, *, expire_at: float | None) -> None:
        try:
            await self._state.fast.script(
                _LOAD, self._keys(account, period)[:1], [nanos, _expiry(expire_at)]
            )
        except Exception as exc:  # noqa: BLE001
            self._state.failed("budget_load", exc)

    async def balance(self, account: str, period: str) -> Balance:
        if self._state.up:
            try:
                reply = await self._state.fast.send(
                    "HMGET", self._keys(account, period)[0], "spent", "held", "loaded"
                )
            except Exception as exc:  # noqa: BLE001
                self._state.failed("budget_balance", exc)
            else:
                spent, held, loaded = reply
                return Balance(int(spent or 0), int(held or 0), loaded is not None)
        return await self._local.balance(account, period)


def ledger_for(state: object) -> RedisLedger | MemoryLedger:
    """The ledger of the backend: in Redis with a Redis backend, else in this process."""
    from modelrouter.state.redis import RedisState  # noqa: PLC0415 - memory needs no redis

    return RedisLedger(state) if isinstance(state, RedisState) else MemoryLedger()
