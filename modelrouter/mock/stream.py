"""Writing one streamed reply with its faults: delays, stalls, resets, in-stream errors."""

from __future__ import annotations

import asyncio

from aiohttp import web

from modelrouter.mock.faults import Faults
from modelrouter.mock.flavours import Flavour, Script
from modelrouter.mock.state import MockState

POLL_SECONDS = 0.1
"""Longer waits wake this often to notice a departed client or a stopping server."""
HOLD_SECONDS = 3600.0


def client_gone(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def abort(request: web.BaseRequest) -> None:
    """Drop the TCP connection without finishing the response (the client sees a reset)."""
    transport = request.transport
    if transport is not None:
        transport.abort()


def close(request: web.BaseRequest) -> None:
    """Close the TCP connection cleanly (what was written goes out), mid-response."""
    transport = request.transport
    if transport is not None:
        transport.close()


async def pause(request: web.BaseRequest, state: MockState, seconds: float) -> bool:
    """Sleep ``seconds``; False as soon as the client is gone or the server is stopping."""
    if seconds <= POLL_SECONDS:
        await asyncio.sleep(seconds)
        return not (state.stopping or client_gone(request))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not (state.stopping or client_gone(request)):
        remaining = deadline - loop.time()
        if remaining <= 0:
            return True
        await asyncio.sleep(min(remaining, POLL_SECONDS))
    return False


class Streamer:
    """Writes a pre-encoded :class:`Script` to a prepared response, applying the faults."""

    __slots__ = ("error_message", "faults", "flavour", "request", "response", "state")

    def __init__(
        self,
        *,
        request: web.BaseRequest,
        response: web.StreamResponse,
        flavour: Flavour,
        faults: Faults,
        state: MockState,
        error_message: str,
    ) -> None:
        self.request = request
        self.response = response
        self.flavour = flavour
        self.faults = faults
        self.state = state
        self.error_message = error_message

    async def run(self, script: Script) -> None:
        """Head, tokens (paced), tail; returns early when a fault ends the stream."""
        faults, write = self.faults, self.response.write
        if faults.first_delay and not await self._wait(faults.first_delay):
            return
        if script.head:
            await write(script.head)
        # Token i is due at start + i * token_delay: the upstream keeps its own pace, as a model
        # does, whatever the consumer's timing (sleeping a fixed delay after each write would
        # let the consumer's speed stretch the stream and blur what a gateway adds).
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index, piece in enumerate(script.pieces):
            delay = start + index * faults.token_delay - loop.time() if index else 0.0
            if delay > 0 and not await self._wait(delay):
                return
            if await self._interrupted(index):
                return
            if index == 1 and faults.truncate:
                await write(piece[: len(piece) // 2])
                close(self.request)
                return
            await write(piece)
            if index == 0 and faults.malformed:
                await write(self.flavour.malformed_line)
        if await self._interrupted(len(script.pieces)):
            return
        if not faults.no_done:
            await write(script.tail)
        if faults.hold_open:  # all sent, and the response never ends
            await pause(self.request, self.state, HOLD_SECONDS)
            abort(self.request)

    async def _wait(self, seconds: float) -> bool:
        """Pause; if the client left or the server is stopping, drop the unfinished stream."""
        if await pause(self.request, self.state, seconds):
            return True
        abort(self.request)
        return False

    async def _interrupted(self, emitted: int) -> bool:
        """Apply the fault due after ``emitted`` tokens, if any; True when the stream is over."""
        faults = self.faults
        if faults.reset_after == emitted:
            abort(self.request)
            return True
        if faults.stall_after == emitted:
            await pause(self.request, self.state, HOLD_SECONDS)
            abort(self.request)  # never let a stalled stream look complete
            return True
        if faults.stream_error_after == emitted:
            await self.response.write(self.flavour.stream_error(self.error_message))
            return True
        return False
