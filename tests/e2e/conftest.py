"""Fixtures of `make e2e`: one mock provider for the session, a fresh stack per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.e2e.stack import MockProvider, Stack

StartStack = Callable[..., Stack]


@pytest.fixture(scope="session")
def mock_provider() -> Iterator[MockProvider]:
    mock = MockProvider()
    yield mock
    mock.stop()


@pytest.fixture
def stack(mock_provider: MockProvider) -> Iterator[StartStack]:
    """Start two replicas with these settings behind nginx; stopped and cleaned up after."""
    started: list[Stack] = []

    def start(**settings: str) -> Stack:
        mock_provider.reset()
        started.append(Stack(mock_provider, **settings))
        return started[-1]

    yield start
    for each in started:
        each.stop()
