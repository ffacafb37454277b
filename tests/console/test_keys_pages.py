"""The keys page and a client key's own page in a real browser: a key is revoked from the page
(a DELETE with the admin key) and is then refused; its spend rises after a request; a client
key sees its own requests and errors rise."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Request, expect

from tests.conftest import CLIENT_KEY, GROQ_KEY
from tests.console.conftest import SHOWN_WITHIN_MS, Watched, sign_in
from tests.console.live import LiveGateway
from tests.console.paging import PAGE_SIZE
from tests.tenants.conftest import ADMIN_KEY

USER = {"messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture(scope="module")
def live(database: str) -> Iterator[LiveGateway]:
    def env(mock: str) -> dict[str, str]:
        return {
            "PROVIDER_ORDER": "groq",
            "GROQ_API_KEY": GROQ_KEY,
            "GROQ_BASE_URL": f"{mock}/v1",
            "GROQ_RATE_LIMIT": "0",
            "API_KEY": CLIENT_KEY,
            "ADMIN_API_KEY": ADMIN_KEY,
            "DATABASE_URL": database,
        }

    gateway = LiveGateway(env).start()
    yield gateway
    gateway.stop()


def new_key(live: LiveGateway, name: str) -> dict[str, Any]:
    status, key = live.call(
        "POST",
        "/admin/keys",
        key=ADMIN_KEY,
        body={"name": name, "budget_usd": 5, "budget_period": "month"},
    )
    assert status == 201, key
    return key


def documented(live: LiveGateway, path: str) -> bool:
    status, document = live.call("GET", "/openapi.json")
    assert status == 200
    return path in document["paths"]


def revoke_from_the_page(live: LiveGateway, watched: Watched, key: dict[str, Any]) -> list[str]:
    """Sign in, revoke `key` with its button (two clicks); the methods sent to its path."""
    sent: list[str] = []

    def note(request: Request) -> None:
        if request.url.endswith(f"/admin/keys/{key['id']}"):
            sent.append(request.method)

    page = watched.page
    page.on("request", note)
    sign_in(watched, live.url, ADMIN_KEY, "admin")
    page.click("nav a[data-page=keys]")
    row = page.locator(f"tr[data-key={key['id']}]")
    expect(row).to_have_attribute("data-status", "active")
    button = row.locator("[data-action=revoke]")
    button.click()
    expect(button).to_have_text("Confirm revoke")
    assert sent == []  # the first click only asks
    button.click()
    expect(row).to_have_attribute("data-status", "revoked", timeout=SHOWN_WITHIN_MS)
    return sent


def test_a_key_is_revoked_from_the_page_with_a_delete(live: LiveGateway, watched: Watched) -> None:
    key = new_key(live, "console-revoke")
    sent = revoke_from_the_page(live, watched, key)
    assert sent == ["DELETE"]
    status, info = live.call("GET", f"/admin/keys/{key['id']}", key=ADMIN_KEY)
    assert (status, info["status"]) == (200, "revoked")
    watched.screenshot("keys-revoked")
    assert watched.errors == []


def test_a_key_revoked_from_the_page_is_refused(live: LiveGateway, watched: Watched) -> None:
    key = new_key(live, "console-refused")
    status, _ = live.call("GET", "/v1/models", key=key["key"])
    assert status == 200
    revoke_from_the_page(live, watched, key)
    status, refused = live.call("GET", "/v1/models", key=key["key"])
    assert status == 401, refused
    assert watched.errors == []


def test_a_keys_spend_rises_after_a_request(live: LiveGateway, watched: Watched) -> None:
    assert documented(live, "/admin/spend")
    key = new_key(live, "console-spend")
    sign_in(watched, live.url, ADMIN_KEY, "admin")
    page = watched.page
    page.click("nav a[data-page=keys]")
    row = page.locator(f"tr[data-key={key['id']}]")
    expect(row.locator("[data-role=requests]")).to_have_text("0")
    # The spend ledger's (no Redis here: nothing waits uncounted), not the history's.
    expect(page.locator("#keys-note")).to_have_text(
        "Spend this month, fleet-wide (written, and waiting in Redis)."
    )
    status, answer = live.call("POST", "/chat", key=key["key"], body=USER)
    assert status == 200, answer
    expect(row.locator("[data-role=requests]")).to_have_text("1", timeout=SHOWN_WITHIN_MS * 2)
    expect(row.locator("[data-role=spend]")).not_to_contain_text("$0.000000 of")
    watched.screenshot("keys-spend")
    assert watched.errors == []


def test_a_client_key_sees_its_own_requests_and_errors_rise(
    live: LiveGateway, watched: Watched
) -> None:
    sign_in(watched, live.url, CLIENT_KEY, "client")
    page = watched.page
    expect(page.locator("#page-usage")).to_be_visible()
    requests = page.locator("#usage-requests-count dd")
    errors = page.locator("#usage-errors-count dd")
    expect(requests).to_have_text("0")
    status, answer = live.call("POST", "/chat", key=CLIENT_KEY, body=USER)
    assert status == 200, answer
    expect(requests).to_have_text("1", timeout=SHOWN_WITHIN_MS * 2)
    expect(errors).to_have_text("0")
    status, refused = live.call("POST", "/chat", key=CLIENT_KEY, body={"messages": []})
    assert status == 400
    expect(errors).to_have_text("1", timeout=SHOWN_WITHIN_MS * 2)
    expect(page.locator("#usage-requests tbody")).to_contain_text(refused["error"]["request_id"])
    assert page.locator("nav a[data-page=keys]").is_hidden()  # no admin page for a client
    watched.screenshot("usage")
    assert watched.errors == []


def test_keys_are_paged_newest_first_with_older_and_newer(
    live: LiveGateway, watched: Watched
) -> None:
    made = [new_key(live, f"console-page-{n:02d}") for n in range(PAGE_SIZE + 1)]
    sign_in(watched, live.url, ADMIN_KEY, "admin")
    page = watched.page
    page.click("nav a[data-page=keys]")
    pages = page.locator("#keys-pages")
    newest, oldest = page.locator(f"tr[data-key={made[-1]['id']}]"), made[0]["id"]
    expect(newest).to_be_visible()
    expect(page.locator("#keys tbody tr")).to_have_count(PAGE_SIZE)
    expect(page.locator(f"tr[data-key={oldest}]")).to_have_count(0)
    expect(pages.locator("[data-action=newer]")).to_be_disabled()
    pages.locator("[data-action=older]").click()
    expect(page.locator(f"tr[data-key={oldest}]")).to_be_visible()
    expect(pages.locator("[data-role=page]")).to_have_text("page 2")
    expect(newest).to_have_count(0)
    with page.expect_response(lambda r: "/admin/keys?" in r.url):  # the next refresh
        pass
    expect(page.locator(f"tr[data-key={oldest}]")).to_be_visible()  # it kept its page
    expect(pages.locator("[data-role=page]")).to_have_text("page 2")
    watched.screenshot("keys-page-2")
    pages.locator("[data-action=newer]").click()
    expect(newest).to_be_visible()
    expect(pages.locator("[data-role=page]")).to_have_text("page 1")
    assert watched.errors == []
