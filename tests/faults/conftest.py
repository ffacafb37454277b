"""Fixtures of the fault suite: one mock provider per module, gateways per test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from tests.faults.support import GatewayProcess, MockProcess

Gateways = Callable[..., Awaitable[GatewayProcess]]


@pytest.fixture(scope="module")
def mock() -> Iterator[MockProcess]:
    process = MockProcess().started()
    yield process
    process.stop()


@pytest.fixture
async def gateways() -> AsyncIterator[Gateways]:
    """Start gateway processes with a given environment; each is stopped after the test."""
    started: list[GatewayProcess] = []

    async def start(env: dict[str, str]) -> GatewayProcess:
        gateway = GatewayProcess(env)
        started.append(gateway)
        return await gateway.up()

    yield start
    await asyncio.get_running_loop().run_in_executor(None, _stop_all, started)


def _stop_all(started: list[GatewayProcess]) -> None:
    for gateway in started:
        gateway.stop()
