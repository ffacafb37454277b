"""The admin overview in a real browser: signing in keeps the key in the tab only, every
deployment is shown with its state, a deployment that starts failing shows blacklisted within
3 s, failed requests are listed without what was said, and nothing errs in the console."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.conftest import CLIENT_KEY
from tests.console.conftest import SHOWN_WITHIN_MS, Watched, overview_env, sign_in
from tests.console.live import LiveGateway
from tests.tenants.conftest import ADMIN_KEY

CANARY = "prompt-canary-7f3a"  # a prompt that must never reach the page


@pytest.fixture(scope="module")
def live(database: str) -> Iterator[LiveGateway]:
    def env(mock: str) -> dict[str, str]:
        return overview_env(mock, openrouter_rate_limit="600", DATABASE_URL=database)

    gateway = LiveGateway(env).start()
    yield gateway
    gateway.stop()


def test_the_console_is_served_under_a_strict_policy(live: LiveGateway) -> None:
    import urllib.request

    with urllib.request.urlopen(f"{live.url}/ui", timeout=10) as response:
        headers = response.headers
        page = response.read().decode()
    policy = headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "style-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert headers["X-Frame-Options"] == "DENY"
    assert "<script>" not in page  # only <script src=...>
    assert " style=" not in page


def test_an_admin_signs_in_and_the_key_stays_in_the_tab(
    live: LiveGateway, watched: Watched
) -> None:
    sign_in(watched, live.url, ADMIN_KEY, "admin")
    page = watched.page
    for name in ("groq", "openrouter"):
        expect(page.locator(f"[data-deployment={name}]")).to_have_attribute("data-state", "ok")
    expect(page.locator("#history-status dd")).to_have_text("ok", timeout=SHOWN_WITHIN_MS * 2)
    assert page.evaluate("sessionStorage.getItem('modelrouter.key')") == ADMIN_KEY
    assert page.context.cookies() == []
    assert ADMIN_KEY not in page.url
    watched.screenshot("overview-signed-in")
    assert watched.errors == []


def test_a_wrong_key_does_not_sign_in(live: LiveGateway, watched: Watched) -> None:
    sign_in(watched, live.url, CLIENT_KEY, "admin")  # a client key is no admin key
    page = watched.page
    expect(page.locator("#signin-error")).to_contain_text("does not open the admin pages")
    assert page.evaluate("sessionStorage.length") == 0
    assert page.locator("#page-overview").is_hidden()
    # The browser reports the refused call itself (a 401): nothing else may err.
    assert all("401" in error for error in watched.errors), watched.errors


def test_a_failing_deployment_shows_blacklisted_within_3_s(
    live: LiveGateway, watched: Watched
) -> None:
    sign_in(watched, live.url, ADMIN_KEY, "admin")
    page = watched.page
    groq = page.locator("[data-deployment=groq]")
    expect(groq).to_have_attribute("data-state", "ok")

    body = {"messages": [{"role": "user", "content": CANARY}]}
    status, answer = live.call("POST", "/chat", key=CLIENT_KEY, body=body)
    assert status == 200, answer  # groq failed, openrouter answered
    expect(groq).to_have_attribute("data-state", "blacklisted", timeout=SHOWN_WITHIN_MS)
    expect(groq.locator("[data-role=state]")).to_contain_text("blacklisted until")
    expect(groq).to_contain_text("last failure: server_error")
    expect(groq.locator("figcaption").nth(2)).to_contain_text("errors 100.0% of 1")

    status, refused = live.call("POST", "/chat", key=CLIENT_KEY, body={"messages": []})
    assert status == 400
    request_id = refused["error"]["request_id"]
    row = page.locator("#errors tbody tr", has_text=request_id)
    expect(row).to_contain_text("invalid_request", timeout=SHOWN_WITHIN_MS)
    assert CANARY not in page.content()
    watched.screenshot("overview-blacklisted")
    assert watched.errors == []
