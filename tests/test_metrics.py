"""`/metrics` after scripted traffic against the mock provider: exact counter and gauge values."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from modelrouter.observability.metrics import FAILURE_REASONS
from modelrouter.web.runtime import RUNTIME
from tests.conftest import USER, Gateway, Mock, parse_sse, two_providers, wait_until
from tests.scrape import PROMTOOL, Page, promtool_check_metrics, scrape

FALLBACKS = "modelrouter_fallbacks_total"
FAILURES = "modelrouter_provider_failures_total"
SUCCESS = "modelrouter_provider_success_total"
REQUESTS = "modelrouter_requests_total"
REJECTIONS = "modelrouter_rate_limit_rejections_total"
STATE = "modelrouter_provider_state"
BUDGET = "modelrouter_rate_budget_remaining"
TOKENS = "modelrouter_tokens_total"
TTFC = "modelrouter_time_to_first_chunk_seconds"
UPSTREAM = "modelrouter_upstream_latency_seconds"


def three_providers(mock: Mock, groq: str = "", **extra: str) -> dict[str, str]:
    return two_providers(
        mock, groq=groq, PROVIDER_ORDER="groq,openrouter,ollama", OLLAMA_BASE_URL=mock.url, **extra
    )


def failures_of(page: Page, provider: str) -> dict[str, float]:
    """Every failure class of a provider, so an assertion also pins the ones that stayed 0."""
    return {r: page.value(FAILURES, provider=provider, reason=r) or 0.0 for r in FAILURE_REASONS}


def no_failures() -> dict[str, float]:
    return dict.fromkeys(FAILURE_REASONS, 0.0)


async def test_fallback_names_the_provider_actually_tried_next(
    gateway: Gateway, mock: Mock
) -> None:
    """groq fails; openrouter is out of budget (rejected, not tried); ollama answers."""
    client = await gateway(**three_providers(mock, groq="status=500", OPENROUTER_RATE_LIMIT="1"))
    first = await client.post("/chat", json={**USER, "provider": "openrouter", "fallback": False})
    assert first.status == 200  # spends openrouter's only request this minute
    with capture_logs() as logs:
        response = await client.post("/chat", json=USER)
    body = await response.json()
    assert (response.status, body["provider"], body["attempts"]) == (200, "ollama", 2)

    page = await scrape(client)
    assert page.series(FALLBACKS) == [
        {"from_provider": "groq", "to_provider": "ollama", "reason": "server_error"}
    ]
    assert page.value(FALLBACKS, from_provider="groq", to_provider="ollama", reason="server_error")
    assert page.total(FALLBACKS) == 1.0
    assert failures_of(page, "groq") == {**no_failures(), "server_error": 1.0}
    assert failures_of(page, "openrouter") == no_failures()
    assert failures_of(page, "ollama") == no_failures()
    assert [page.value(SUCCESS, provider=p) for p in ("groq", "openrouter", "ollama")] == [0, 1, 1]
    assert page.value(REQUESTS, route="/chat", method="POST", status="200") == 2.0
    assert page.value(REJECTIONS, scope="openrouter") == 1.0
    assert page.value(REJECTIONS, scope="groq") == 0.0
    assert page.value(REJECTIONS, scope="all_providers") == 0.0
    assert page.value(REJECTIONS, scope="streams") == 0.0
    # The provider budgets after their last admission; groq is unlimited, so it has no series.
    assert page.value(BUDGET, provider="openrouter") == 0.0
    assert page.value(BUDGET, provider="ollama") == 99.0
    assert page.value(BUDGET, provider="groq") is None
    assert [page.value(STATE, provider=p) for p in ("groq", "openrouter", "ollama")] == [2, 0, 0]
    # Tokens from the Usage events of the two answers (the mock reports 2 prompt, 8 completion).
    for provider in ("openrouter", "ollama"):
        assert page.value(TOKENS, provider=provider, kind="prompt") == 2.0
        assert page.value(TOKENS, provider=provider, kind="completion") == 8.0
    assert page.value(TOKENS, provider="groq", kind="completion") == 0.0
    # Every attempt that reached an upstream is timed once; /chat has no first chunk.
    assert page.value(f"{UPSTREAM}_count", provider="groq", outcome="error") == 1.0
    assert page.value(f"{UPSTREAM}_count", provider="groq", outcome="ok") == 0.0
    assert page.value(f"{UPSTREAM}_count", provider="ollama", outcome="ok") == 1.0
    assert page.value(f"{UPSTREAM}_count", provider="openrouter", outcome="ok") == 1.0
    assert page.total(f"{TTFC}_count") == 0.0

    fallbacks = [e for e in logs if e["event"] == "fallback"]
    assert len(fallbacks) == 1
    assert fallbacks[0]["from_provider"] == "groq"
    assert fallbacks[0]["to_provider"] == "ollama"
    assert fallbacks[0]["reason"] == "server_error"
    if PROMTOOL:
        promtool_check_metrics(page.text)


async def test_no_fallback_is_counted_when_no_other_provider_takes_the_request(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock, groq="status=500", openrouter="status=503"))
    response = await client.post("/chat", json=USER)
    assert response.status == 502
    response = await client.post("/chat", json=USER)  # both blacklisted now
    assert response.status in (502, 503)
    page = await scrape(client)
    assert page.value(
        FALLBACKS, from_provider="groq", to_provider="openrouter", reason="server_error"
    )
    assert page.total(FALLBACKS) == 1.0  # groq -> openrouter once; openrouter had no next
    assert [page.value(STATE, provider=p) for p in ("groq", "openrouter")] == [2, 2]


async def test_every_provider_out_of_budget_is_one_client_429(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, GROQ_RATE_LIMIT="1", OPENROUTER_RATE_LIMIT="1"))
    statuses = [(await client.post("/chat", json=USER)).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    page = await scrape(client)
    assert page.value(REJECTIONS, scope="groq") == 2.0  # the second and the third request
    assert page.value(REJECTIONS, scope="openrouter") == 1.0  # the third request
    assert page.value(REJECTIONS, scope="all_providers") == 1.0
    assert page.value(REJECTIONS, scope="streams") == 0.0
    assert page.value(BUDGET, provider="groq") == 0.0
    assert page.value(BUDGET, provider="openrouter") == 0.0
    assert page.value(REQUESTS, route="/chat", method="POST", status="200") == 2.0
    assert page.value(REQUESTS, route="/chat", method="POST", status="429") == 1.0
    assert page.total(FALLBACKS) == 0.0, "skipping an out-of-budget provider is not a fallback"
    assert page.total(FAILURES) == 0.0, "our own limit is no provider failure"


async def test_upstream_429_is_a_provider_failure_not_a_rejection(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock, groq="status=429,retry_after=30"))
    assert (await client.post("/chat", json=USER)).status == 200
    page = await scrape(client)
    assert failures_of(page, "groq") == {**no_failures(), "rate_limited": 1.0}
    assert page.value(
        FALLBACKS, from_provider="groq", to_provider="openrouter", reason="rate_limited"
    )
    assert page.total(REJECTIONS) == 0.0
    assert page.value(STATE, provider="groq") == 2.0


async def test_provider_state_gauge_follows_blacklist_and_half_open(
    gateway: Gateway, mock: Mock
) -> None:
    # With a zero backoff the blacklist ends at once: the provider waits for its probe.
    client = await gateway(**two_providers(mock, groq="status=500", BACKOFF_BASE_SECONDS="0"))
    page = await scrape(client)
    assert [page.value(STATE, provider=p) for p in ("groq", "openrouter")] == [0, 0]
    assert (await client.post("/chat", json=USER)).status == 200
    page = await scrape(client)
    assert [page.value(STATE, provider=p) for p in ("groq", "openrouter")] == [1, 0]


async def test_cut_stream_counts_the_failure_and_no_fallback(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, groq="stream_error_after=2"))
    response = await client.post("/stream", json=USER)
    assert response.status == 200
    events = parse_sse(await response.text())
    assert events[-1][0] == "error"
    page = await scrape(client)
    assert page.value(REQUESTS, route="/stream", method="POST", status="200") == 1.0
    assert failures_of(page, "groq") == {**no_failures(), "server_error": 1.0}
    assert page.total(FALLBACKS) == 0.0, "after the first byte there is no fallback"
    assert page.value(f"{TTFC}_count", provider="groq") == 1.0
    assert page.value(f"{TTFC}_count", provider="openrouter") == 0.0
    assert page.value(f"{UPSTREAM}_count", provider="groq", outcome="error") == 1.0
    assert page.value(SUCCESS, provider="groq") == 0.0
    assert page.value(STATE, provider="groq") == 2.0
    assert page.value("modelrouter_active_streams") == 0.0


async def test_streams_cap_and_client_disconnect(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, groq="stall_after=2", MAX_CONCURRENT_STREAMS="1"))
    url = str(client.make_url("/stream"))
    async with aiohttp.ClientSession() as session:
        held = await session.post(url, json=USER)
        assert held.status == 200
        await held.content.readuntil(b"\n\n")  # first chunk out; the upstream now stalls
        refused = await client.post("/stream", json=USER)
        assert refused.status == 429
        page = await scrape(client)
        assert page.value("modelrouter_active_streams") == 1.0
        assert page.value(REJECTIONS, scope="streams") == 1.0
        held.close()  # the client goes away mid-stream

    groq = client.app[RUNTIME].system.router.providers["groq"]

    async def released() -> bool:
        page = await scrape(client)
        done = page.value(REQUESTS, route="/stream", method="POST", status="499") == 1.0
        return done and groq.view().in_flight == 0

    await wait_until(released)
    page = await scrape(client)
    assert page.value("modelrouter_active_streams") == 0.0
    assert page.value(REQUESTS, route="/stream", method="POST", status="429") == 1.0
    assert page.value(REQUESTS, route="/stream", method="POST", status="499") == 1.0
    assert page.value(REJECTIONS, scope="streams") == 1.0
    assert page.value(REJECTIONS, scope="all_providers") == 0.0
    assert page.value(f"{TTFC}_count", provider="groq") == 1.0
    # A client leaving blames no provider and times no upstream call.
    assert page.total(FAILURES) == 0.0
    assert page.total(f"{UPSTREAM}_count") == 0.0
    assert page.value(STATE, provider="groq") == 0.0


async def test_successful_stream_counts_tokens_and_first_chunk(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock))
    response = await client.post("/stream", json=USER)
    assert parse_sse(await response.text())[-1] == ("message", "[DONE]")
    page = await scrape(client)
    assert page.value(f"{TTFC}_count", provider="groq") == 1.0
    assert page.value(TOKENS, provider="groq", kind="prompt") == 2.0
    assert page.value(TOKENS, provider="groq", kind="completion") == 8.0
    assert page.value(f"{UPSTREAM}_count", provider="groq", outcome="ok") == 1.0
    assert page.value(SUCCESS, provider="groq") == 1.0


async def test_actor_restart_and_mailbox_depth(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock))
    page = await scrape(client)
    for actor in ("groq", "openrouter"):  # the router is no actor: it owns routing tasks
        assert page.value("modelrouter_actor_mailbox_depth", actor=actor) == 0.0
    assert page.value("modelrouter_actor_mailbox_depth", actor="router") is None
    assert page.value("modelrouter_actor_restarts_total", actor="groq") == 0.0
    groq = client.app[RUNTIME].system.router.providers["groq"]
    with capture_logs() as logs:
        groq.tell("not a message")  # type: ignore[arg-type]  # crashes the actor's loop

        async def restarted() -> bool:
            return groq.restarts == 1 and groq.running

        await wait_until(restarted)
    page = await scrape(client)
    assert page.value("modelrouter_actor_restarts_total", actor="groq") == 1.0
    assert page.value("modelrouter_actor_restarts_total", actor="openrouter") == 0.0
    assert [e["actor"] for e in logs if e["event"] == "actor_restarted"] == ["groq"]
    assert (await client.post("/chat", json=USER)).status == 200, "the restarted actor serves"


async def test_label_values_never_come_from_the_client(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, groq="status=500"))
    odd = "groq/model-from-a-client-zz9"
    await client.post("/chat", json={**USER, "model": odd})
    await client.post("/chat", json={**USER, "model": "nobody-knows-this-model-zz9"})
    await client.post("/stream", json={**USER, "model": odd})
    await client.get("/no/such/route-zz9")
    page = await scrape(client)
    assert "zz9" not in page.text
    routes = {labels["route"] for labels in page.series(REQUESTS)}
    assert routes <= {"/chat", "/stream", "/health", "/ready", "/metrics", "unmatched"}


async def test_concurrent_traffic_keeps_counts_exact(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, MAX_CONCURRENT_STREAMS="64"))

    async def one(i: int) -> Any:
        path = "/stream" if i % 2 else "/chat"
        response = await client.post(path, json=USER)
        await response.read()
        return response.status

    statuses = await asyncio.gather(*(one(i) for i in range(40)))
    assert statuses == [200] * 40
    page = await scrape(client)
    assert page.value(REQUESTS, route="/chat", method="POST", status="200") == 20.0
    assert page.value(REQUESTS, route="/stream", method="POST", status="200") == 20.0
    assert page.value(SUCCESS, provider="groq") == 40.0
    assert page.value(f"{TTFC}_count", provider="groq") == 20.0
    assert page.value(TOKENS, provider="groq", kind="completion") == 320.0
    assert page.value("modelrouter_active_streams") == 0.0


@pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)"
)
async def test_exposition_after_every_kind_of_traffic_passes_promtool(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**three_providers(mock, groq="status=500", OPENROUTER_RATE_LIMIT="1"))
    await client.post("/chat", json=USER)
    await client.post("/stream", json=USER)
    await client.post("/chat", data=b"{")
    await client.get("/health")
    client.app[RUNTIME].system.router.providers["groq"].down = True
    page = await scrape(client)
    assert page.value(STATE, provider="groq") == 3.0
    assert page.total(FALLBACKS) >= 1.0
    promtool_check_metrics(page.text)


async def test_requests_in_flight_counts_the_ones_being_routed(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock, groq="first_delay=0.5"))
    router = client.app[RUNTIME].system.router
    pending = asyncio.create_task(client.post("/chat", json=USER))
    await wait_until(lambda: _async(router.providers["groq"].view().in_flight == 1))
    assert (await scrape(client)).value("modelrouter_requests_in_flight") == 1.0
    assert (await pending).status == 200
    await wait_until(lambda: _async(not router.tasks))
    assert (await scrape(client)).value("modelrouter_requests_in_flight") == 0.0


async def _async(value: bool) -> bool:
    return value
