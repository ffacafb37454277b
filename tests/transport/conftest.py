"""Fixtures of the transport suite: scripted raw servers (see servers.py), a private CA, and
real forward proxies (tinyproxy, see proxies.py) shared by the whole session."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.transport.proxies import Proxies
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


class PrivateCA:
    """A CA that no trust store knows, its PEM on disk, and server contexts it signs."""

    def __init__(self, folder: Path) -> None:
        self.ca = trustme.CA(organization_name="modelrouter test CA")
        self.pem = folder / "private-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.pem))
        self.client = ssl.create_default_context(cafile=str(self.pem))

    def server(self, *names: str, sni: list[str] | None = None) -> ssl.SSLContext:
        """A server context whose certificate is valid for `names` only; the names clients
        ask for (SNI) are appended to `sni`."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*names).configure_cert(context)
        if sni is not None:
            context.sni_callback = lambda _sock, name, _ctx: sni.append(name or "")  # type: ignore[assignment, func-returns-value]
        return context


@pytest.fixture(scope="session")
def private_ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCA:
    return PrivateCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def proxies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxies]:
    started = Proxies(tmp_path_factory.mktemp("tinyproxy"))
    yield started
    started.stop()
