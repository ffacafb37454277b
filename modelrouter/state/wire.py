"""One pipelined connection for the commands on the request path, answered in order.

redis-py spends about 110 us of CPU on a command sent alone and 20-40 us per command in a
pipeline (a connection checkout, a timeout context per reply, several layers of calls). The
commands every request or stream pays for (the limits' scripts, a lease's release) go instead
over one connection of the backend's own: the commands issued in one event-loop iteration leave
in one `write` (packed by hiredis), whoever issued them, and one reader hands the replies back
in order (parsed by hiredis). Callers do not wait for each other's round trips: a command is
written while earlier ones are still on their way (pipelining across requests).

redis-py still makes the connection (TLS, AUTH, SELECT, CLIENT SETNAME, Sentinel's lookup of the
master), and everything off the request path (loading scripts at start, health, pub/sub) still
goes through the client. The wire carries what `Script` needs (`evalsha`, `script_load`) and
`zrem`. A caller bounds its own wait; the backend then `reset`s the wire, so a server that went
silent costs one connection, not a growing queue.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Final

import hiredis
from redis import exceptions as rx

_INCOMPLETE: Final = object()

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


def reply_error(text: str) -> rx.RedisError:
    code = text.split(" ", 1)[0]
    return _ERRORS.get(code, rx.ResponseError)(text)


class InDoubt(rx.TimeoutError):
    """The connection was dropped while the command was on its way: it may have run."""


class Wire:
    def __init__(self, pool: Any, *, max_pending: int = 8192) -> None:
        self._pool = pool  # redis-py's connection pool: it connects and authenticates
        self._max_pending = max_pending
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._out: list[bytes] = []  # packed commands not written yet
        self._writer: asyncio.StreamWriter | None = None
        self._connection: Any = None
        self._connecting: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- what `Script` and the backend call ------------------------------------------------------
    def evalsha(self, *args: Any) -> asyncio.Future[Any]:
        return self.send("EVALSHA", *args)

    def zrem(self, key: str, *members: str) -> asyncio.Future[Any]:
        return self.send("ZREM", key, *members)

    def script_load(self, source: str) -> asyncio.Future[Any]:
        return self.send("SCRIPT", "LOAD", source)

    def send(self, *command: Any) -> asyncio.Future[Any]:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future = loop.create_future()
        if len(self._waiting) >= self._max_pending:
            future.set_exception(rx.ConnectionError("too many Redis commands waiting"))
            return future
        self._waiting.append(future)
        self._out.append(hiredis.pack_command(command))
        if len(self._out) == 1:
            if self._writer is not None:
                loop.call_soon(self._flush)  # after every command of this iteration
            elif self._connecting is None:
                self._connecting = loop.create_task(self._connect(), name="redis-wire-connect")
        return future

    def reset(self, error: BaseException | None = None) -> None:
        """Drop the connection; every command still waiting fails (it may have run)."""
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._connection = None
        unsent = len(self._out)  # the last ones queued: never written, so they did not run
        why = f"{type(error).__name__}: {error}" if error is not None else "closed"
        dropped = InDoubt(f"Redis connection dropped ({why})")
        self._fail(dropped, unsent, error or dropped)

    async def close(self) -> None:
        reader = self._reader
        self.reset()
        if reader is not None:
            await asyncio.gather(reader, return_exceptions=True)

    # -- the connection ----------------------------------------------------------------------
    async def _connect(self) -> None:
        try:
            connection = self._pool.make_connection()
            await connection.connect()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to every caller waiting
            self._connecting = None
            self._fail(exc)
            return
        # redis-py did the handshake on its streams; from here on they are the wire's.
        self._connection = connection
        self._writer = connection._writer
        stream: asyncio.StreamReader = connection._reader
        self._connecting = None
        assert self._loop is not None
        self._reader = self._loop.create_task(self._read(stream), name="redis-wire-reader")
        self._flush()

    def _flush(self) -> None:
        if self._writer is None or not self._out:
            return
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out = []
        self._writer.write(data)

    async def _read(self, stream: asyncio.StreamReader) -> None:
        parser = hiredis.Reader(encoding="utf-8", replyError=reply_error, notEnoughData=_INCOMPLETE)
        waiting = self._waiting
        try:
            while data := await stream.read(1 << 16):
                parser.feed(data)
                while (reply := parser.gets()) is not _INCOMPLETE:
                    future = waiting.popleft()
                    if future.done():  # its caller gave up
                        continue
                    if isinstance(reply, rx.RedisError):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
            error: Exception = rx.ConnectionError("Connection closed by server.")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken connection fails its callers
            error = exc
        self._reader = None
        self.reset(error)

    def _fail(
        self, error: BaseException, unsent: int = 0, unsent_error: BaseException | None = None
    ) -> None:
        waiting, self._waiting = self._waiting, collections.deque()
        self._out = []
        sent = len(waiting) - unsent
        for index, future in enumerate(waiting):
            if not future.done():
                future.set_exception(error if index < sent else (unsent_error or error))
