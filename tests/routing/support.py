"""Helpers of the routing tests: a routing file written to disk, and a gateway started on it."""

from __future__ import annotations

import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from modelrouter.config import Settings
from modelrouter.routing import load_settings
from tests.conftest import CLIENT_KEY

# No environment provider is enabled (groq has no key): only the file's deployments serve.
BASE_ENV = {"API_KEY": CLIENT_KEY, "PROVIDER_ORDER": "groq", "BACKOFF_BASE_SECONDS": "5"}
FileGateway = Callable[..., Awaitable[TestClient[Any, Any]]]


def write(path: Path, text: str) -> str:
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def settings_from(tmp_path: Path, text: str, **env: str) -> Settings:
    path = write(tmp_path / "router.yaml", text)
    return load_settings(BASE_ENV | {"MODELROUTER_CONFIG": path} | env)
