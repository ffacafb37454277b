"""Deployments from a routing file behind a live gateway, against mock deployments: latency,
least-busy and per-deployment budgets measured through HTTP; Azure and Gemini reached with the
`openai` SDK; /v1/models, /health and the metrics naming groups and deployments."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from modelrouter.mock import start_mock
from modelrouter.mock.faults import Faults
from modelrouter.mock.server import STATE
from modelrouter.web.runtime import RUNTIME
from tests.conftest import CLIENT_KEY, USER, Mock, wait_until
from tests.routing.support import FileGateway

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


async def served_by(client: TestClient[Any, Any], model: str, *, stream: bool = False) -> str:
    body = {**USER, "model": model, "stream": stream}
    response = await client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status == 200, await response.text()
    await response.read()
    return response.headers["x-modelrouter-provider"]


@pytest.fixture
async def three_mocks() -> AsyncIterator[list[tuple[Any, str]]]:
    """Three mock deployments whose answers take 10, 50 and 200 ms (their runners, URLs)."""
    started = [await start_mock(defaults=Faults(first_delay=d)) for d in (0.01, 0.05, 0.2)]
    yield [(runner, f"http://127.0.0.1:{port}/v1") for runner, port in started]
    for runner, _ in started:
        await runner.cleanup()


def group_file(strategy: str, urls: list[str], **extra: str) -> str:
    lines = ["deployments:"]
    for index, url in enumerate(urls):
        lines += [
            f"  - name: d{index}",
            "    kind: openai",
            f"    base_url: {url}",
            "    models: {fast: mock-model}",
            f"    rpm: {extra.get(f'rpm{index}', 0)}",
        ]
        if f"tpm{index}" in extra:
            lines.append(f"    tpm: {extra[f'tpm{index}']}")
        if f"streams{index}" in extra:
            lines.append(f"    max_parallel_streams: {extra[f'streams{index}']}")
    lines += ["models:", f"  fast: {{strategy: {strategy}}}"]
    return "\n".join(lines) + "\n"


async def test_latency_routes_to_the_fastest_and_moves_when_it_slows(
    file_gateway: FileGateway, three_mocks: list[tuple[Any, str]]
) -> None:
    client = await file_gateway(group_file("latency", [url for _, url in three_mocks]))
    warm = [await served_by(client, "fast") for _ in range(3)]
    assert sorted(warm) == ["d0", "d1", "d2"], "each is measured once first"
    counts = Counter([await served_by(client, "fast") for _ in range(60)])
    assert counts["d0"] >= 54, counts  # >= 90% to the 10 ms deployment
    # The fastest slows to 300 ms: after its next answer, the 50 ms deployment is preferred.
    three_mocks[0][0].app[STATE].defaults = Faults(first_delay=0.3)
    counts = Counter([await served_by(client, "fast") for _ in range(100)])
    assert counts["d1"] >= 90, counts


async def test_latency_times_streams_to_their_first_event(
    file_gateway: FileGateway, mock: Mock
) -> None:
    urls = [mock.base("first_delay=0.15"), mock.base("first_delay=0.01")]
    client = await file_gateway(group_file("latency", urls))
    warm = [await served_by(client, "fast", stream=True) for _ in range(2)]
    assert warm == ["d0", "d1"], "each is measured once first, in file order"
    counts = Counter([await served_by(client, "fast", stream=True) for _ in range(20)])
    assert counts["d1"] >= 17, counts


async def test_least_busy_spreads_concurrent_streams_within_one(
    file_gateway: FileGateway, mock: Mock
) -> None:
    urls = [mock.base(f"token_delay=0.05,tokens=40,first_delay=0.0{i}") for i in range(4)]
    text = group_file("least-busy", urls)
    client = await file_gateway(text, MAX_CONCURRENT_STREAMS="100")
    runtime = client.app[RUNTIME]

    async def stream() -> str:
        body = {**USER, "model": "fast", "stream": True}
        response = await client.post("/v1/chat/completions", json=body, headers=AUTH)
        assert response.status == 200
        await response.read()
        return response.headers["x-modelrouter-provider"]

    tasks = [asyncio.create_task(stream()) for _ in range(64)]

    async def all_in_flight() -> bool:
        return bool(sum(p.in_flight for p in runtime.system.snapshot().providers) == 64)

    await wait_until(all_in_flight, timeout=10)
    in_flight = [p.in_flight for p in runtime.system.snapshot().providers]
    assert max(in_flight) - min(in_flight) <= 1, in_flight
    assert Counter(await asyncio.gather(*tasks)) == {f"d{i}": 16 for i in range(4)}


async def test_a_deployments_rpm_is_its_own_not_its_siblings(
    file_gateway: FileGateway, mock: Mock
) -> None:
    urls = [mock.base("tokens=3"), mock.base("tokens=4")]
    client = await file_gateway(group_file("ordered", urls, rpm0="2", rpm1="5"))
    served = Counter([await served_by(client, "fast") for _ in range(7)])
    assert served == {"d0": 2, "d1": 5}, "d0's budget spent, d1 still had its own five"
    response = await client.post("/chat", json={**USER, "model": "fast"}, headers=AUTH)
    assert response.status == 429, "both budgets spent"
    assert await mock.count("tokens=3") == 2
    assert await mock.count("tokens=4") == 5


async def test_a_deployment_out_of_tpm_falls_back_to_its_sibling_then_429s(
    file_gateway: FileGateway, mock: Mock
) -> None:
    # A tpm of 1: the first request reserves it and its reported usage overdraws it.
    urls = [mock.base("tokens=3"), mock.base("tokens=4")]
    client = await file_gateway(group_file("ordered", urls, tpm0="1", tpm1="1"))
    assert await served_by(client, "fast") == "d0"
    assert await served_by(client, "fast") == "d1", "d0's tpm spent: its sibling serves"
    response = await client.post("/chat", json={**USER, "model": "fast"}, headers=AUTH)
    assert response.status == 429, "both tpm spent"
    assert float(response.headers["Retry-After"]) > 0
    assert await mock.count("tokens=3") == 1
    assert await mock.count("tokens=4") == 1


async def test_a_deployments_stream_lease_sends_the_next_stream_to_its_sibling(
    file_gateway: FileGateway, mock: Mock
) -> None:
    urls = [mock.base("token_delay=0.05,tokens=40"), mock.base()]
    client = await file_gateway(group_file("ordered", urls, streams0="1"))
    d0 = client.app[RUNTIME].system.router.providers["d0"]
    first = asyncio.create_task(served_by(client, "fast", stream=True))

    async def d0_streams() -> bool:
        return bool(d0.in_flight == 1)

    await wait_until(d0_streams)
    assert await served_by(client, "fast", stream=True) == "d1", "d0's one stream is taken"
    assert await served_by(client, "fast") == "d0", "a whole answer takes no stream lease"
    assert await first == "d0"

    async def d0_idle() -> bool:  # the attempt's end (its lease released before its ticket)
        return bool(d0.in_flight == 0)

    await wait_until(d0_idle)
    assert await served_by(client, "fast", stream=True) == "d0", "its lease was released"


async def test_a_failing_deployment_is_skipped_and_the_group_is_the_fallback(
    file_gateway: FileGateway, mock: Mock
) -> None:
    client = await file_gateway(group_file("ordered", [mock.base("status=500"), mock.base()]))
    assert [await served_by(client, "fast") for _ in range(3)] == ["d1"] * 3
    assert await mock.count("status=500") == 1, "blacklisted after its failure: skipped"


async def test_models_health_and_metrics_name_groups_and_deployments(
    file_gateway: FileGateway, mock: Mock
) -> None:
    text = group_file("ordered", [mock.base(), mock.base("tokens=2")])
    text = text.replace(
        "models: {fast: mock-model}", "models: {fast: mock-model, big: mock-big}", 1
    )
    text += "  big: {fallbacks: [fast]}\ndefault_model: big\n"
    client = await file_gateway(text)
    listed = await (await client.get("/v1/models", headers=AUTH)).json()
    ids = [m["id"] for m in listed["data"]]
    assert ids == ["auto", "fast", "big", "d0/fast", "d0/big", "d1/fast"]
    assert await served_by(client, "auto") == "d0"
    assert (await mock.received())[-1]["body"]["model"] == "mock-big", "auto is default_model"
    health = await (await client.get("/health")).json()
    assert set(health["providers"]) == {"d0", "d1"}
    metrics = await (await client.get("/metrics")).text()
    assert 'provider="d0"' in metrics
    assert 'provider="d1"' in metrics


async def test_the_openai_sdk_reaches_azure_and_gemini_deployments_declared_in_a_file(
    file_gateway: FileGateway, mock: Mock
) -> None:
    text = f"""
deployments:
  - name: az-prod
    kind: azure
    base_url: {mock.url}
    api_key: ${{AZ_KEY}}
    models: {{smart: gpt-4o-prod}}
  - name: gem
    kind: gemini
    base_url: {mock.url}
    api_key: ${{GEMINI_KEY}}
    models: {{smart: gemini-2.5-flash, flash: gemini-2.5-flash}}
models:
  smart: {{strategy: ordered}}
"""
    client = await file_gateway(text, AZ_KEY="azure-file-key-0001", GEMINI_KEY="AIza-file-key-02")
    sdk = openai.AsyncOpenAI(
        base_url=str(client.make_url("/v1")), api_key=CLIENT_KEY, max_retries=0
    )
    messages: Any = [{"role": "user", "content": "hello there"}]
    for model, provider in (("smart", "az-prod"), ("flash", "gem"), ("gem/smart", "gem")):
        completion = await sdk.chat.completions.create(model=model, messages=messages)
        assert completion.choices[0].message.content == "Hello from the mock provider.\nSecond line"
        assert (completion.model_extra or {})["provider"] == provider
        stream = await sdk.chat.completions.create(
            model=model, messages=messages, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[-1].usage is not None
    sent = await mock.received()
    assert sent[0]["path"].startswith("/openai/deployments/gpt-4o-prod/chat/completions")
    assert sent[0]["headers"]["api-key"] == "azure-file-key-0001"
    assert sent[-1]["path"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"


async def test_stream_options_false_sends_streams_without_the_field(
    file_gateway: FileGateway, mock: Mock
) -> None:
    text = group_file("ordered", [mock.base()]).replace(
        "    rpm: 0\n", "    rpm: 0\n    stream_options: false\n"
    )
    client = await file_gateway(text)
    body = {**USER, "model": "fast", "stream": True}
    response = await client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status == 200
    await response.read()
    assert "stream_options" not in (await mock.received())[-1]["body"]


async def test_a_file_deployments_key_never_reaches_logs_or_clients(
    file_gateway: FileGateway, mock: Mock
) -> None:
    secret = "sk-file-deployment-secret-0042"
    text = group_file("ordered", [mock.base("status=500,echo_auth=true")]).replace(
        "    rpm: 0\n", "    rpm: 0\n    api_key: ${LEAKY_KEY}\n"
    )
    client = await file_gateway(text, LEAKY_KEY=secret)
    with capture_logs() as logs:
        response = await client.post("/chat", json={**USER, "model": "fast"}, headers=AUTH)
        body = await response.text()
    assert response.status == 502
    assert "received Authorization" in body, "the upstream did echo it"
    assert secret not in body
    assert secret not in repr(logs)
