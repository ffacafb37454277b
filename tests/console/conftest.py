"""The console in Chromium (the system package's, driven by Playwright's sync API): one
browser per module, a fresh page (and tab session) per test, console errors collected, and a
screenshot of each page under test-output/console/ for review."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from tests.conftest import CLIENT_KEY, GROQ_KEY, OPENROUTER_KEY
from tests.history.conftest import create_database, drop_database
from tests.tenants.conftest import ADMIN_KEY

CHROMIUM = os.environ.get("MODELROUTER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
OUTPUT = Path(__file__).resolve().parents[2] / "test-output" / "console"
# Within the 3 s the console promises (2 s refresh), plus the time to draw.
SHOWN_WITHIN_MS = 3000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is needed at {CHROMIUM}: scripts/system-tools.sh test installs it")
    with sync_playwright() as playwright:
        # --no-sandbox: the suite runs as root in CI, where Chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    url = asyncio.run(create_database())
    yield url
    asyncio.run(drop_database(url))


def overview_env(mock: str, *, openrouter_rate_limit: str, **extra: str) -> dict[str, str]:
    """A gateway for the overview pages (for `LiveGateway`, given the mock's URL): groq fails
    from its first request on and stays blacklisted for the module, openrouter answers."""
    return {
        "PROVIDER_ORDER": "groq,openrouter",
        "BACKOFF_BASE_SECONDS": "60",  # blacklisted for the whole module once it fails
        "GROQ_API_KEY": GROQ_KEY,
        "GROQ_BASE_URL": f"{mock}/x/status=503/v1",  # fails from its first request on
        "GROQ_RATE_LIMIT": "0",
        "OPENROUTER_API_KEY": OPENROUTER_KEY,
        "OPENROUTER_BASE_URL": f"{mock}/v1",
        "OPENROUTER_RATE_LIMIT": openrouter_rate_limit,
        "API_KEY": CLIENT_KEY,
        "ADMIN_API_KEY": ADMIN_KEY,
        **extra,
    }


class Watched:
    """A page and what went wrong in it: console errors and uncaught exceptions."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def screenshot(self, name: str) -> Path:
        OUTPUT.mkdir(parents=True, exist_ok=True)
        path = OUTPUT / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield Watched(page)
    context.close()


def sign_in(watched: Watched, base: str, key: str, role: str) -> None:
    page = watched.page
    page.goto(f"{base}/ui")
    page.fill("#signin-key", key)
    page.check(f"input[name=role][value={role}]")
    page.click("#signin-submit")
