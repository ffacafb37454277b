"""A TCP proxy on loopback that adds a fixed delay to every byte sent to its target.

The bench puts it between a gateway and Redis to see what a Redis one network hop away costs
(`make bench` with Redis: the `redis +1ms` row). The delay is added to the client -> target
direction only and replies pass at once, so each request/reply round trip is `delay` longer:
one timer, not two, because the event loop's timers wake on millisecond ticks (epoll) and two
half-delays would each be rounded up (the bench prints the round trip it measures through the
proxy: the delay plus the proxy's own hop and wake-up, about 0.2-0.3 ms more on a loaded
machine). Bytes keep their order; each direction is bounded (its reader pauses while more than
`max_buffered` bytes wait). It runs as its own process so that its CPU can be measured apart
from the gateway's:

    python -m modelrouter.bench.delay --port P --target 127.0.0.1:6379 --delay-ms 1
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections import deque
from collections.abc import Callable
from typing import cast

from modelrouter.config import is_loopback

MAX_DELAY_MS = 100.0


class _Side(asyncio.Protocol):
    """One connection of a pair; what the other side receives is written here, `delay` later."""

    def __init__(
        self,
        *,
        delay: float,
        max_buffered: int,
        on_made: Callable[[_Side], None] | None = None,
        on_lost: Callable[[_Side], None] | None = None,
    ) -> None:
        self.delay = delay
        self.max_buffered = max_buffered
        self.on_made = on_made
        self.on_lost = on_lost
        self.peer: _Side | None = None
        self.transport: asyncio.Transport | None = None
        self._queue: deque[tuple[float, bytes]] = deque()
        self._queued = 0
        self._timer: asyncio.TimerHandle | None = None
        self._write_paused = False
        self._ending = False
        self._early: list[bytes] = []  # received before the peer was joined

    # -- this connection -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream transport (uvloop's too)
        if self.on_made is not None:
            self.on_made(self)

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            self.peer.send(data)
        else:
            # uvloop starts reading after connection_made, whatever it asked: pause now, so
            # at most one read waits here.
            self._early.append(data)
            if self.transport is not None:
                self.transport.pause_reading()

    def join(self, peer: _Side) -> None:
        """Both connections are up: from now on what arrives here goes to `peer`."""
        self.peer = peer
        early, self._early = self._early, []
        for data in early:
            peer.send(data)

    def eof_received(self) -> bool | None:
        return None  # close this side; connection_lost ends the other

    def connection_lost(self, _exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.peer is not None:
            self.peer.end()
        if self.on_lost is not None:
            self.on_lost(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._hold_peer()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._hold_peer()

    # -- what the peer sends through this connection ----------------------------------------
    def send(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.delay <= 0:
            transport.write(data)
            return
        loop = asyncio.get_running_loop()
        self._queue.append((loop.time() + self.delay, data))
        self._queued += len(data)
        if self._timer is None:
            self._timer = loop.call_at(self._queue[0][0], self._flush)
        self._hold_peer()

    def end(self) -> None:
        """The peer is gone: close once what it sent has been written."""
        self._ending = True
        if not self._queue and self.transport is not None:
            self.transport.close()

    def _flush(self) -> None:
        self._timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        queue = self._queue
        while queue and queue[0][0] <= now:
            _, data = queue.popleft()
            self._queued -= len(data)
            transport.write(data)
        if queue:
            self._timer = loop.call_at(queue[0][0], self._flush)
        elif self._ending:
            transport.close()
        self._hold_peer()

    def _hold_peer(self) -> None:
        """The peer reads only while this side has room for what it sends."""
        peer = self.peer
        if peer is None or peer.transport is None or peer.transport.is_closing():
            return
        if self._write_paused or self._queued > self.max_buffered:
            peer.transport.pause_reading()
        else:
            peer.transport.resume_reading()


class DelayProxy:
    """Accepts on 127.0.0.1:`port` and joins each connection to `target`."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        delay: float,
        max_connections: int = 256,
        max_buffered: int = 1 << 20,
    ) -> None:
        if not is_loopback(target[0]):
            raise ValueError(f"the delay proxy reaches loopback only, not {target[0]!r}")
        if not 0 <= delay <= MAX_DELAY_MS / 1000:
            raise ValueError(f"delay must be from 0 to {MAX_DELAY_MS:g} ms")
        self.target = target
        self.delay = delay
        self.max_connections = max_connections
        self.max_buffered = max_buffered
        self._clients: set[_Side] = set()
        self._joining: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self, port: int) -> int:
        """Listen on 127.0.0.1:`port` (0: any free port); returns the port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accepted, "127.0.0.1", port)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._joining:
            task.cancel()
        await asyncio.gather(*self._joining, return_exceptions=True)
        for client in list(self._clients):
            if client.transport is not None:
                client.transport.close()
            if client.peer is not None and client.peer.transport is not None:
                client.peer.transport.close()
        if self._server is not None:
            await self._server.wait_closed()

    def _accepted(self) -> _Side:
        # The client's side writes replies at once; the target's side delays what it writes.
        return _Side(
            delay=0.0,
            max_buffered=self.max_buffered,
            on_made=self._made,
            on_lost=self._clients.discard,
        )

    def _made(self, client: _Side) -> None:
        assert client.transport is not None
        if len(self._clients) >= self.max_connections:
            client.transport.close()
            return
        self._clients.add(client)
        client.transport.pause_reading()  # until the target is there to take it
        task = asyncio.get_running_loop().create_task(self._join(client))
        self._joining.add(task)
        task.add_done_callback(self._joining.discard)

    async def _join(self, client: _Side) -> None:
        transport = client.transport
        assert transport is not None
        upstream = _Side(delay=self.delay, max_buffered=self.max_buffered)
        try:
            await asyncio.get_running_loop().create_connection(lambda: upstream, *self.target)
        except OSError:
            transport.close()
            return
        upstream.join(client)
        client.join(upstream)
        if transport.is_closing():  # the client left while the target was being reached
            upstream.end()
            return
        transport.resume_reading()


def parse_target(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"target {text!r} is not host:port")
    return host.strip("[]"), int(port)


async def serve(port: int, target: tuple[str, int], *, delay: float) -> None:
    proxy = DelayProxy(target, delay=delay)
    await proxy.start(port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await proxy.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelrouter.bench.delay")
    parser.add_argument("--port", type=int, required=True, help="listen on 127.0.0.1:PORT")
    parser.add_argument("--target", required=True, help="loopback host:port to reach")
    parser.add_argument(
        "--delay-ms", type=float, default=1.0, help="added to each round trip (0 to 100)"
    )
    args = parser.parse_args(argv)
    try:
        target = parse_target(args.target)
        DelayProxy(target, delay=args.delay_ms / 1000)  # checks the arguments before binding
    except ValueError as exc:
        parser.error(str(exc))
    asyncio.run(serve(args.port, target, delay=args.delay_ms / 1000))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
