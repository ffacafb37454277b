"""The admin overview of a fleet (two gateways on one Redis) in a real browser: the page one
replica serves shows what the other replica answered and refused, and says the figures are
fleet-wide; nothing errs in the console."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from playwright.sync_api import expect

from modelrouter.observability import recent_fleet
from tests.conftest import CLIENT_KEY
from tests.console.conftest import SHOWN_WITHIN_MS, Watched, overview_env, sign_in
from tests.console.live import LiveGateway
from tests.shared_state.conftest import redis_url  # noqa: F401 - the fixture, used by name
from tests.tenants.conftest import ADMIN_KEY

# Another replica's figures are published every 2 s, then read at the page's next refresh.
FLEET_SHOWN_WITHIN_MS = SHOWN_WITHIN_MS + int(recent_fleet.EVERY * 1000)


@pytest.fixture(scope="module")
def replicas(redis_url: str) -> Iterator[tuple[LiveGateway, LiveGateway]]:  # noqa: F811
    prefix = f"mrtest-{uuid.uuid4().hex[:12]}"

    def env(mock: str) -> dict[str, str]:
        return overview_env(
            mock, openrouter_rate_limit="0", REDIS_URL=redis_url, REDIS_KEY_PREFIX=prefix
        )

    started = []
    with pytest.MonkeyPatch.context() as patch:
        for name in ("replica-a", "replica-b"):  # one process: its host:pid would be shared
            patch.setattr(recent_fleet, "replica_id", lambda name=name: name)
            started.append(LiveGateway(env).start())
    yield started[0], started[1]
    for gateway in started:
        gateway.stop()
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_one_replicas_page_shows_the_other_replicas_attempts_and_errors(
    replicas: tuple[LiveGateway, LiveGateway], watched: Watched
) -> None:
    a, b = replicas
    sign_in(watched, a.url, ADMIN_KEY, "admin")
    page = watched.page
    groq = page.locator("[data-deployment=groq]")
    expect(groq).to_have_attribute("data-state", "ok")
    expect(page.locator("#charts-scope dd")).to_have_text(
        "fleet-wide, other replicas' up to 2 s old; 10 s and 1 min steps"
    )
    expect(page.locator("#errors-scope")).to_have_text(
        "(fleet-wide, other replicas' up to 2 s old)"
    )

    status, answer = b.call(
        "POST", "/chat", key=CLIENT_KEY, body={"messages": [{"role": "user", "content": "hi"}]}
    )
    assert status == 200, answer  # on b: groq failed, openrouter answered
    status, refused = b.call("POST", "/chat", key=CLIENT_KEY, body={"messages": []})
    assert status == 400
    row = page.locator("#errors tbody tr", has_text=refused["error"]["request_id"])
    expect(row).to_contain_text("invalid_request", timeout=FLEET_SHOWN_WITHIN_MS)
    expect(groq.locator("figcaption").nth(2)).to_contain_text(
        "errors 100.0% of 1", timeout=FLEET_SHOWN_WITHIN_MS
    )
    expect(groq).to_have_attribute("data-state", "blacklisted")  # the shared health feed
    expect(groq).to_contain_text("in flight 0 (this replica)")
    watched.screenshot("overview-fleet")
    assert watched.errors == []
