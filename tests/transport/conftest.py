"""Fixtures of the transport suite: scripted raw servers (see servers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.transport.servers import Script, ScriptedServer

Serve = Callable[..., Awaitable[ScriptedServer]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start scripted servers for one test; all are closed when it ends."""
    servers: list[ScriptedServer] = []

    async def start(script: Script, **options: Any) -> ScriptedServer:
        server = await ScriptedServer(script, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()
