"""A virtual key's own limits, with the shared state's operations (the providers' own): `rpm`
(the GCRA bucket), `tpm` (the same bucket in tokens: the request's ceiling reserved at
admission, settled on its real usage at the end) and `max_parallel_streams` (leases).

State keys are hash-tagged per key (`mr:{key_...}:krpm:v1`), so each script touches one slot of
a Redis Cluster. With Redis the limits are exact across replicas; without it, in the process;
with Redis away, each replica keeps its share (REDIS_EXPECTED_REPLICAS), as providers' limits do.

A hold is always settled (`Hold.settle`, from a `finally`): a reservation's unused tokens and
the stream lease go back whether the request ended well, failed, or its client went away. The
settle runs as a task owned by `KeyLimits`, so a second cancellation cannot skip it.
"""

from __future__ import annotations

import asyncio
import math
from typing import Final

from modelrouter.schemas import ChatRequest, EmbedChat
from modelrouter.state.base import Lease, SharedState
from modelrouter.state.memory import MemoryState
from modelrouter.tenants.keys import Key

DEFAULT_RESERVE_TOKENS: Final = 4096  # a request without max_tokens reserves this much output
TOKENS_PER_MESSAGE: Final = 8  # a message's framing, above its content's bytes


class Limited(Exception):
    """Over one of the key's limits: a 429 with Retry-After."""

    def __init__(self, reason: str, retry_after: float, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # rate_limited, tpm or streams (the rejection metric's label)
        self.retry_after = retry_after
        self.message = message


def token_ceiling(chat: ChatRequest, *, default_output: int = DEFAULT_RESERVE_TOKENS) -> int:
    """The most tokens the request can use: the prompt bounded above by its UTF-8 bytes plus
    TOKENS_PER_MESSAGE a message (no tokenizer makes fewer bytes than tokens), plus max_tokens
    or `default_output`."""
    prompt = sum(len(m.content.encode()) + TOKENS_PER_MESSAGE for m in chat.messages)
    if chat.operation != "chat":  # embeddings, a token count: no output
        return prompt + (chat.given_tokens() if isinstance(chat, EmbedChat) else 0)
    return prompt + (chat.max_tokens or default_output)


class Hold:
    """What one request holds against its key: tokens reserved, and a stream lease."""

    __slots__ = ("key", "lease", "reserved")

    def __init__(self, key: Key, reserved: int, lease: Lease | None) -> None:
        self.key = key
        self.reserved = reserved
        self.lease = lease


class KeyLimits:
    """Admission against keys' limits, and the settles it owes (awaited at shutdown)."""

    def __init__(
        self,
        state: SharedState,
        *,
        lease_ttl: float = 30.0,
        renew_every: float = 10.0,
        default_output: int = DEFAULT_RESERVE_TOKENS,
    ) -> None:
        self.state = state
        self.lease_ttl = lease_ttl if state.leases_expire else math.inf
        self._local = isinstance(state, MemoryState)  # never suspends (see settle)
        self.renew_every = renew_every
        self.default_output = default_output
        self._settling: set[asyncio.Task[None]] = set()

    async def admit(self, key: Key, chat: ChatRequest, *, stream: bool) -> Hold | None:
        """Take the request's share of the key's limits (None: the key has none), or Limited
        with nothing held."""
        streams = key.max_parallel_streams if stream else None
        if key.rpm is None and key.tpm is None and streams is None:
            return None
        state = self.state
        lease = None
        if streams is not None:
            lease = await state.acquire_lease(f"kstreams:{key.id}", streams, ttl=self.lease_ttl)
            if lease is None:
                raise Limited("streams", 1.0, "the key's max_parallel_streams are all open")
            if state.leases_expire:
                state.keep_lease(lease, ttl=self.lease_ttl, every=self.renew_every)
        try:
            reserved = await self._rates(key, chat)
        except BaseException:
            if lease is not None:
                await state.release_lease(lease)
            raise
        return Hold(key, reserved, lease)

    async def _rates(self, key: Key, chat: ChatRequest) -> int:
        """Take one request of the key's rpm and the request's ceiling of its tpm: the tokens
        reserved, or Limited with neither taken."""
        state = self.state
        if key.rpm is not None:
            decision = await state.acquire_rate(f"krpm:{key.id}", key.rpm)
            if not decision.allowed:
                raise Limited("rate_limited", decision.retry_after, "the key's rpm is used up")
        if key.tpm is None:
            return 0
        reserved = min(token_ceiling(chat, default_output=self.default_output), key.tpm)
        decision = await state.acquire_units(f"ktpm:{key.id}", key.tpm, reserved)
        if not decision.allowed:
            if key.rpm is not None:  # not served: its request goes back
                await state.acquire_units(f"krpm:{key.id}", key.rpm, -1)
            raise Limited("tpm", decision.retry_after, "the key's tpm is used up")
        return reserved

    def settle(self, hold: Hold, used: int | None) -> asyncio.Task[None] | None:
        """End `hold`: the reservation becomes `used` tokens (None: nothing was used, give it
        all back) and the lease is released. Runs on as its own task (None: nothing to do)."""
        if hold.lease is None and (hold.key.tpm is None or (used or 0) == hold.reserved):
            return None
        settling = self._settle(hold, used or 0)
        if self._local:
            # The embedded state's operations complete without suspending: run it now, not as
            # a task per request (nothing can interrupt a coroutine that never yields).
            try:
                settling.send(None)
            except StopIteration:
                return None
            settling.close()
            raise RuntimeError("the embedded state suspended a settle")  # its contract broken
        task = asyncio.get_running_loop().create_task(settling)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        return task

    async def _settle(self, hold: Hold, used: int) -> None:
        state, key = self.state, hold.key
        if hold.lease is not None:
            await state.release_lease(hold.lease)
        if key.tpm is not None and used != hold.reserved:
            # Over the reservation (a ceiling that guessed low): taken even over the limit.
            extra = used - hold.reserved
            await state.acquire_units(f"ktpm:{key.id}", key.tpm, extra, force=extra > 0)

    async def close(self) -> None:
        """Wait for the settles still running (bounded by the state's own timeouts)."""
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
