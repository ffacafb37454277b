"""Cost per request through the gateway: where it shows (headers, final usage, provider_meta),
what it counts (the price table, PRICES_FILE, cache hits, unpriced models) and how a stream that
never got its usage is billed."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from modelrouter.tenants.cost import ESTIMATE_TOKENS_PER_MESSAGE, estimated_tokens
from tests.conftest import USER, Gateway, Mock, parse_sse, two_providers, wait_until
from tests.scrape import scrape
from tests.test_anthropic import anthropic

# The mock answers 2 prompt tokens ("hello there") and 8 completion tokens; Groq's bundled price
# for its default model is $0.59 in and $0.79 out per million: 2*590 + 8*790 nano-dollars.
GROQ_NANOS = 2 * 590 + 8 * 790
GROQ_MODEL = "llama-3.3-70b-versatile"
STREAM = {**USER, "stream": True}


def dollars(nanos: int) -> str:
    """Nano-dollars as the header writes dollars: an exact decimal, no trailing zeros."""
    return format(Decimal(nanos).scaleb(-9).normalize(), "f")


def finished(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in logs if line["event"] == "request_finished"]


async def finished_lines(client: Any, logs: list[dict[str, Any]], count: int) -> list[Any]:
    """The request_finished lines, once `count` were written (the accounting drains later)."""

    async def check() -> bool:
        await client.get("/metrics")  # a scrape drains the accounting
        return len(finished(logs)) >= count

    await wait_until(check)
    return [line for line in finished(logs) if line["route"] != "/metrics"]


async def test_whole_answers_carry_their_cost_in_a_header_and_their_body(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock))
    chat = await client.post("/chat", json=USER)
    v1 = await client.post("/v1/chat/completions", json={"model": "auto", **USER})
    assert chat.headers["x-modelrouter-cost-usd"] == v1.headers["x-modelrouter-cost-usd"]
    assert chat.headers["x-modelrouter-cost-usd"] == dollars(GROQ_NANOS) == "0.0000075"
    assert (await chat.json())["provider_meta"]["cost_usd"] == GROQ_NANOS / 1e9
    assert (await v1.json())["usage"]["cost_usd"] == GROQ_NANOS / 1e9


async def test_a_v1_stream_has_its_cost_in_its_final_usage_and_the_upstream_always_sends_usage(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock))
    asked = {"model": "auto", **STREAM, "stream_options": {"include_usage": True}}
    response = await client.post("/v1/chat/completions", json=asked)
    assert "x-modelrouter-cost-usd" not in response.headers  # sent before the usage is known
    events = parse_sse(await response.text())
    usage = json.loads(events[-2][1])["usage"]
    assert usage == {
        "prompt_tokens": 2,
        "completion_tokens": 8,
        "total_tokens": 10,
        "cost_usd": GROQ_NANOS / 1e9,
    }
    # Not asked for: the upstream still sends it (the cost needs it), the client sees none.
    response = await client.post("/v1/chat/completions", json={"model": "auto", **STREAM})
    events = parse_sse(await response.text())
    assert not any('"usage"' in data for _, data in events)
    sent = [r["body"] for r in await mock.received()]
    assert [body["stream_options"] for body in sent] == [{"include_usage": True}] * 2


async def test_the_seed_stream_keeps_its_format_and_its_cost_is_recorded(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock))
    with capture_logs() as logs:
        response = await client.post("/stream", json=USER)
        text = await response.text()
        [line] = await finished_lines(client, logs, 1)
    assert "cost" not in text
    assert all(kind == "message" for kind, _ in parse_sse(text))
    assert line["cost_usd"] == dollars(GROQ_NANOS)
    assert "usage_estimated" not in line
    page = await scrape(client)
    spent = page.value("modelrouter_spend_usd_total", provider="groq", model=GROQ_MODEL)
    assert spent == GROQ_NANOS / 1e9


async def test_spend_adds_up_the_requests_and_a_cache_hit_spends_nothing(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock, CACHE_MODE="deterministic"))
    zero = {**USER, "temperature": 0}
    for _ in range(3):  # one miss, two hits
        assert (await client.post("/chat", json=zero)).status == 200
    await client.post("/chat", json={**USER, "temperature": 0.5})  # another miss
    page = await scrape(client)
    spent = page.value("modelrouter_spend_usd_total", provider="groq", model=GROQ_MODEL)
    assert spent == 2 * GROQ_NANOS / 1e9
    assert await mock.count() == 2


async def test_an_unpriced_model_costs_nothing_is_counted_and_said_once(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock, GROQ_MODEL="no-price-for-me"))
    with capture_logs() as logs:
        for _ in range(3):
            response = await client.post("/chat", json=USER)
            assert response.headers["x-modelrouter-cost-usd"] == "0"
        lines = await finished_lines(client, logs, 3)
    assert [line.get("unpriced") for line in lines] == [True] * 3
    said = [line for line in logs if line["event"] == "model_unpriced"]
    assert [(s["provider"], s["model"]) for s in said] == [("groq", "no-price-for-me")]
    page = await scrape(client)
    labels = {"provider": "groq", "model": "no-price-for-me"}
    assert page.value("modelrouter_unpriced_requests_total", **labels) == 3
    assert page.total("modelrouter_spend_usd_total") == 0


async def test_prices_file_prices_a_model_the_table_lacks(
    gateway: Gateway, mock: Mock, tmp_path: Path
) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"groq/house-model": {"input": 1000, "output": 2000}}))
    env = two_providers(mock, GROQ_MODEL="house-model", PRICES_FILE=str(prices))
    client = await gateway(**env)
    response = await client.post("/chat", json=USER)
    # 2 tokens at $1000 and 8 at $2000 per million: $0.018.
    assert response.headers["x-modelrouter-cost-usd"] == "0.018"


async def test_a_stream_cut_mid_way_is_billed_from_an_estimate(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock, groq="stream_error_after=3"))
    body = {"model": "auto", **STREAM, "stream_options": {"include_usage": True}}
    with capture_logs() as logs:
        response = await client.post("/v1/chat/completions", json=body)
        events = parse_sse(await response.text())
        [line] = await finished_lines(client, logs, 1)
    assert events[-1][0] == "error"  # cut: no usage chunk, no [DONE]
    relayed = len("Hello from the")
    prompt = estimated_tokens(len("hello there")) + ESTIMATE_TOKENS_PER_MESSAGE
    completion = estimated_tokens(relayed)
    assert (line["prompt_tokens"], line["completion_tokens"]) == (prompt, completion)
    assert line["usage_estimated"] is True
    assert line["cost_usd"] == dollars(prompt * 590 + completion * 790)
    page = await scrape(client)  # the spend has it; the tokens providers reported do not
    spent = page.value("modelrouter_spend_usd_total", provider="groq", model=GROQ_MODEL)
    assert spent == (prompt * 590 + completion * 790) / 1e9
    assert page.total("modelrouter_tokens_total", provider="groq") == 0


async def test_a_cut_anthropic_stream_bills_the_prompt_tokens_its_provider_gave(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**anthropic(mock, "stream_error_after=3"))
    with capture_logs() as logs:
        await (await client.post("/stream", json=STREAM)).read()
        [line] = await finished_lines(client, logs, 1)
    # message_start said 2 input tokens; the text relayed ("Hello from the") is counted.
    completion = estimated_tokens(len("Hello from the"))
    assert (line["prompt_tokens"], line["completion_tokens"]) == (2, completion)
    assert line["usage_estimated"] is True
    # claude-haiku-4-5: $1 in and $5 out per million.
    assert line["cost_usd"] == dollars(2 * 1000 + completion * 5000)


async def test_a_stream_its_client_abandons_is_billed_from_what_was_relayed(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock, groq="token_delay=0.05,tokens=200"))
    with capture_logs() as logs:
        response = await client.post("/stream", json=USER)
        first = await response.content.readuntil(b"\n\n")
        assert first.startswith(b"data: ")
        response.close()  # the client leaves mid-stream

        async def gone() -> bool:
            await asyncio.sleep(0)
            await client.get("/metrics")
            return any(line.get("status") == 499 for line in finished(logs))

        await wait_until(gone, timeout=10)
    [line] = [line for line in finished(logs) if line.get("status") == 499]
    assert line["usage_estimated"] is True
    assert line["completion_tokens"] >= 1
    assert float(line["cost_usd"]) > 0
