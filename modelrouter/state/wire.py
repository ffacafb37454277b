"""One pipelined connection for the commands on the request path, answered in order.

redis-py's client does a connection checkout, a timeout context per reply and several layers
of calls for each command (docs/redis.md has the figures). The commands every request or
stream pays for (the limits' scripts, a lease's acquire and release) go instead over one
connection of the backend's own: commands are packed by hiredis and written together,
whoever issued them (pipelining across requests), and the replies, parsed by hiredis as they
arrive on the connection's transport, are handed back in order.

- A script is called by SHA; on NOSCRIPT (a restart, a failover, SCRIPT FLUSH) the wire loads it
  and runs it again for the same caller.
- One batch is in flight at a time (see `_flush_soon`): batches grow with the load, and the
  system calls per command shrink with them.
- One timer for the whole connection bounds every wait: when the oldest command has waited
  `timeout` (replies come in order, so nothing behind it is answered either), the connection is
  dropped and every waiting caller fails with `InDoubt` (it may have run). No timer per call.
- redis-py still makes the connection (TLS, AUTH, SELECT, CLIENT SETNAME, Sentinel's lookup of
  the master); everything off the request path (health, pub/sub) still goes through the client.
  The wire then takes the connection's transport from its private `_writer`: pyproject.toml
  bounds redis-py to the minor releases tested, and `check_internals` runs at start-up.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from functools import partial
from typing import Any, Final, Protocol

import hiredis
from redis import exceptions as rx
from redis.asyncio import Connection, ConnectionPool

from modelrouter.internals import require

_INCOMPLETE: Final = object()
# hiredis' stub types its argument as a 1-tuple; it takes any tuple of str, bytes and numbers.
_pack: Callable[[tuple[Any, ...]], bytes] = hiredis.pack_command

# Reply errors as the redis-py exceptions the rest of the backend knows.
_ERRORS: Final[dict[str, type[rx.RedisError]]] = {
    "NOSCRIPT": rx.NoScriptError,
    "READONLY": rx.ReadOnlyError,
    "CLUSTERDOWN": rx.ClusterDownError,
    "MASTERDOWN": rx.MasterDownError,
    "LOADING": rx.BusyLoadingError,
    "NOAUTH": rx.AuthenticationError,
    "WRONGPASS": rx.AuthenticationError,
    "NOPERM": rx.NoPermissionError,
    "OOM": rx.OutOfMemoryError,
}


def check_internals() -> None:
    """IncompatibleRelease when the installed redis-py lacks what `Wire._connect` takes from
    it: a pool's `make_connection`, and the asyncio StreamWriter a connection keeps in `_writer`
    (set by its __init__, so looked for on one that is never connected)."""
    require("redis", ConnectionPool, ("make_connection",))
    require("redis", Connection(), ("_writer",))


def reply_error(text: str) -> rx.RedisError:
    code = text.split(" ", 1)[0]
    return _ERRORS.get(code, rx.ResponseError)(text)


class InDoubt(rx.TimeoutError):
    """The connection was dropped while the command was on its way: it may have run."""

    def __init__(self, message: str, reason: BaseException | None = None) -> None:
        super().__init__(message)
        self.reason = reason  # why the connection was dropped


class NotSent(rx.ConnectionError):
    """The connection was dropped (or never made) before the command was written."""

    def __init__(self, message: str, reason: BaseException | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class ScriptLike(Protocol):
    sha: str
    source: str


# A waiting command: the caller's future (None: nobody waits), when it was queued, and the
# script to load and run again on NOSCRIPT.
_Entry = tuple["asyncio.Future[Any] | None", float, "tuple[ScriptLike, tuple[Any, ...]] | None"]


class Wire:
    def __init__(
        self,
        pool: Any,
        *,
        timeout: float = 0.25,
        max_pending: int = 8192,
        on_lost: Callable[[Any, BaseException], None] | None = None,
    ) -> None:
        self._pool = pool  # redis-py's connection pool: it connects and authenticates
        self._on_lost = on_lost  # told of every `zrem` that failed, with what it carried
        self._timeout = timeout
        self._max_pending = max_pending
        self._waiting: collections.deque[_Entry] = collections.deque()
        self._out: list[bytes] = []  # packed commands not written yet
        self._transport: asyncio.Transport | None = None
        self._receiver: _Receiver | None = None
        self._connection: Any = None
        self._connecting: asyncio.Task[None] | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._flush_due = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- commands ------------------------------------------------------------------------------
    def send(self, *command: Any) -> asyncio.Future[Any]:
        future = self._future()
        if not future.done():
            self._queue(future, _pack(command), None)
        return future

    def script(self, script: ScriptLike, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        """EVALSHA `script`; loaded and run again if the server does not know it."""
        future = self._future()
        if not future.done():
            command = ("EVALSHA", script.sha, len(keys), *keys, *args)
            self._queue(future, _pack(command), (script, command))
        return future

    def zrem(self, key: str, member: str, note: Any = None) -> None:
        """Queue a ZREM nobody waits for (a released lease): on its way once this returns. If
        it fails, `on_lost(note, error)` hears of it."""
        if len(self._waiting) < self._max_pending:
            self._queue(None, _pack(("ZREM", key, member)), _Lost(note))
        elif self._on_lost is not None:
            self._on_lost(note, rx.ConnectionError("too many Redis commands waiting"))

    def _future(self) -> asyncio.Future[Any]:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future = loop.create_future()
        if len(self._waiting) >= self._max_pending:
            future.set_exception(rx.ConnectionError("too many Redis commands waiting"))
        return future

    def _queue(self, future: asyncio.Future[Any] | None, packed: bytes, retry: Any) -> None:
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        self._waiting.append((future, loop.time(), retry))
        self._out.append(packed)
        if self._watch is None:
            self._watch = loop.call_at(loop.time() + self._timeout, self._check)
        if self._transport is not None:
            self._flush_soon()
        elif self._connecting is None:
            self._connecting = loop.create_task(self._connect(), name="redis-wire-connect")

    def _flush_soon(self) -> None:
        """Write what is queued once every command of this iteration is in, unless a batch is
        still unanswered: then it goes when that batch's replies are in. One batch in flight
        at a time: at idle a command leaves at once; under load the batches grow with the
        load, and so do the commands per system call (each write and read is one)."""
        if self._flush_due or len(self._waiting) > len(self._out):
            return
        assert self._loop is not None
        self._flush_due = True
        self._loop.call_soon(self._flush)

    # -- the connection ----------------------------------------------------------------------
    def reset(self, error: BaseException | None = None) -> None:
        """Drop the connection; every command still waiting fails (`InDoubt` once written)."""
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        if self._transport is not None:
            self._transport.close()
            self._transport = self._receiver = self._connection = None
        why = f"{type(error).__name__}: {error}" if error is not None else "closed"
        self._fail(
            InDoubt(f"Redis connection dropped ({why})", error),
            unsent=len(self._out),
            unsent_error=NotSent(f"Redis connection dropped before sending ({why})", error),
        )

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        self.reset()

    async def _connect(self) -> None:
        try:
            connection = self._pool.make_connection()
            await connection.connect()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to every caller waiting
            self._connecting = None
            self._fail(exc, unsent=len(self._out), unsent_error=exc)
            return
        # redis-py did the handshake; from here on its transport is the wire's: replies go to
        # `_Receiver.data_received` (no stream reader, no task woken per read). The connection
        # object is kept: when collected, it closes its transport.
        self._connection = connection
        transport: asyncio.Transport = connection._writer.transport
        self._receiver = _Receiver(self)
        transport.set_protocol(self._receiver)
        self._transport = transport
        self._connecting = None
        self._flush()

    def _flush(self) -> None:
        self._flush_due = False
        if self._transport is None or not self._out:
            return
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out = []
        self._transport.write(data)

    def received(self, parser: hiredis.Reader, data: bytes) -> None:
        """Replies, in the order the commands were written."""
        parser.feed(data)
        waiting = self._waiting
        while (reply := parser.gets()) is not _INCOMPLETE:
            future, _, retry = waiting.popleft()
            if future is None:  # nobody waits
                if isinstance(reply, rx.RedisError):
                    self._lost(retry, reply)
                continue
            if future.done():  # its caller gave up
                continue
            if type(reply) is rx.NoScriptError and retry is not None:
                self._load_and_run(future, *retry)
            elif isinstance(reply, rx.RedisError):
                future.set_exception(reply)
            else:
                future.set_result(reply)
        if self._out:
            self._flush_soon()

    def dropped(self, receiver: _Receiver, error: BaseException) -> None:
        if receiver is self._receiver:  # not an older connection's late notice
            self.reset(error)

    def _load_and_run(self, future: asyncio.Future[Any], script: Any, command: Any) -> None:
        self._queue(None, _pack(("SCRIPT", "LOAD", script.source)), None)
        self._queue(future, _pack(command), None)

    def _check(self) -> None:
        """The one timer: drop the connection when the oldest command has waited too long."""
        self._watch = None
        if not self._waiting:
            return
        assert self._loop is not None
        due = self._waiting[0][1] + self._timeout
        if self._loop.time() >= due:
            self.reset(TimeoutError(f"no reply from Redis within {self._timeout} s"))
        else:
            self._watch = self._loop.call_at(due, self._check)

    def _fail(self, error: BaseException, *, unsent: int, unsent_error: BaseException) -> None:
        waiting, self._waiting = self._waiting, collections.deque()
        self._out = []
        sent = len(waiting) - unsent  # the last ones queued were never written: they did not run
        for index, (future, _, extra) in enumerate(waiting):
            failure = error if index < sent else unsent_error
            if future is None:
                self._lost(extra, failure)
            elif not future.done():
                future.set_exception(failure)

    def _lost(self, extra: Any, error: BaseException) -> None:
        if isinstance(extra, _Lost) and self._on_lost is not None:
            self._on_lost(extra.note, error)


class _Receiver(asyncio.Protocol):
    """The wire's side of its connection: replies in, the connection's end."""

    def __init__(self, wire: Wire) -> None:
        self._wire = wire
        self._parser = hiredis.Reader(
            encoding="utf-8", replyError=reply_error, notEnoughData=_INCOMPLETE
        )

    def data_received(self, data: bytes) -> None:
        try:
            self._wire.received(self._parser, data)
        except Exception as exc:  # noqa: BLE001 - a malformed reply breaks the connection
            self._wire.dropped(self, exc)

    def eof_received(self) -> bool:
        self._wire.dropped(self, rx.ConnectionError("Connection closed by server."))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._wire.dropped(self, exc or rx.ConnectionError("Connection closed by server."))


class _Lost:
    """What a command nobody waits for carries, for `on_lost`."""

    __slots__ = ("note",)

    def __init__(self, note: Any) -> None:
        self.note = note


class ClientCalls:
    """The wire's calls over a redis-py client, for Redis Cluster (whose client routes each key
    to its node): each call a task of its own, bounded by its own deadline."""

    def __init__(
        self,
        client: Any,
        *,
        timeout: float = 0.25,
        on_lost: Callable[[Any, BaseException], None] | None = None,
    ) -> None:
        self._client = client
        self._timeout = timeout
        self._on_lost = on_lost
        self._releasing: set[asyncio.Future[Any]] = set()

    def send(self, *command: Any) -> asyncio.Future[Any]:
        return self._bounded(self._client.execute_command(*command))

    def script(self, script: Any, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        return self._bounded(script(self._client, keys, args))

    def zrem(self, key: str, member: str, note: Any = None) -> None:
        release = self._bounded(self._client.zrem(key, member))
        self._releasing.add(release)  # held until done
        release.add_done_callback(partial(self._released, note))

    def _released(self, note: Any, release: asyncio.Future[Any]) -> None:
        self._releasing.discard(release)
        error = None if release.cancelled() else release.exception()
        if error is not None and self._on_lost is not None:
            self._on_lost(note, error)

    def _bounded(self, call: Any) -> asyncio.Future[Any]:
        return asyncio.ensure_future(asyncio.wait_for(call, self._timeout))

    def reset(self, error: BaseException | None = None) -> None:
        """Nothing to drop: the client reconnects by itself."""

    async def close(self) -> None:
        await asyncio.gather(*self._releasing, return_exceptions=True)
