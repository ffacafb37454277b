"""The routing tests' fixture: a gateway started on a routing file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from modelrouter.web import create_app
from tests.routing.support import FileGateway, settings_from


@pytest.fixture
def file_gateway(aiohttp_client: Any, tmp_path: Path) -> FileGateway:
    """Start a gateway on a routing file (its text) and extra environment variables."""

    async def start(text: str, **env: str) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = await aiohttp_client(
            create_app(settings_from(tmp_path, text, **env))
        )
        return client

    return start
