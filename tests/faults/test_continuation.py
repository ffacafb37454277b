"""The fault matrix, streams cut mid-answer with CONTINUE_ON_CUT on: text only is continued by
the next deployment that can continue an assistant turn (one stream for the client, nothing
repeated at the seam); a stream that sent a tool-call delta ends as always, with an error."""

from __future__ import annotations

from typing import Any

from modelrouter.mock.text import reply_tokens
from tests.conftest import Mock, cut_stream_error, parse_sse
from tests.faults.conftest import Gateways
from tests.faults.support import (
    AUTH,
    USER,
    GatewayProcess,
    MockProcess,
    chunks,
    fault_env,
    no_leaks,
    session,
)

CUT = "tokens=100,reset_after=37"  # groq: 37 of 100 tokens, then the connection is reset
WHOLE = "tokens=100"  # openrouter: the same answer, whole (continued when asked to)


def continued_env(mock: MockProcess, groq: str, openrouter: str, **extra: str) -> dict[str, str]:
    settings = {
        "CONTINUE_ON_CUT": "on",
        "OPENROUTER_CONTINUATION": "assistant_prefix",
        "PROVIDER_TIMEOUT": "10",
        **extra,
    }
    return fault_env(mock, groq, openrouter, **settings)


async def forget(mock: MockProcess) -> None:
    """The mock forgets what earlier tests of the module sent it."""
    async with session() as client, client.post(f"{mock.url}/_mock/reset") as response:
        assert response.status == 200


async def stream(gateway: GatewayProcess) -> tuple[int, str]:
    async with (
        session() as client,
        client.post(f"{gateway.url}/stream", json=USER, headers=AUTH) as response,
    ):
        return response.status, (await response.read()).decode()


async def sent_to(mock: MockProcess, spec: str) -> list[dict[str, Any]]:
    async with session() as client:
        received = await Mock(mock.url, client).received()
    return [r["body"] for r in received if r["path"].startswith(f"/x/{spec}/")]


async def test_a_stream_cut_at_token_37_is_continued_by_the_next_deployment(
    mock: MockProcess, gateways: Gateways
) -> None:
    await forget(mock)
    gateway = await gateways(continued_env(mock, CUT, WHOLE))
    code, body = await stream(gateway)
    assert code == 200
    events = parse_sse(body)
    tokens = reply_tokens(100)
    assert chunks(events) == tokens  # the first 37, then the rest: nothing lost or repeated
    assert "".join(chunks(events)) == "".join(tokens)
    assert not [kind for kind, _ in events if kind == "error"]
    assert events[-1] == ("message", "[DONE]")
    assert ": continued from groq by openrouter\n" in body  # an SSE comment, ignored by clients
    (asked,) = await sent_to(mock, WHOLE)
    assert asked["messages"][-1] == {"role": "assistant", "content": "".join(tokens[:37])}
    assert asked["continue_final_message"] is True  # vLLM's continuation of the last message
    assert asked["add_generation_prompt"] is False
    page = await no_leaks(gateway, mock)
    outcome = {"from_provider": "groq", "to_provider": "openrouter", "outcome": "ok"}
    assert page.value("modelrouter_stream_continuations_total", **outcome) == 1


async def test_a_cut_after_a_tool_call_delta_ends_with_the_error_event(
    mock: MockProcess, gateways: Gateways
) -> None:
    await forget(mock)
    gateway = await gateways(continued_env(mock, "tool_call=1,reset_after=2", WHOLE))
    code, body = await stream(gateway)
    assert code == 200
    error = cut_stream_error(parse_sse(body))
    assert error["type"] == "upstream_error"
    assert ": continued" not in body
    assert await sent_to(mock, WHOLE) == []  # no continuation asked
    await no_leaks(gateway, mock)


async def test_a_cut_with_no_deployment_that_continues_ends_with_the_error_event(
    mock: MockProcess, gateways: Gateways
) -> None:
    await forget(mock)
    env = continued_env(mock, CUT, WHOLE, OPENROUTER_CONTINUATION="none")
    gateway = await gateways(env)
    code, body = await stream(gateway)
    assert code == 200
    events = parse_sse(body)
    assert chunks(events) == reply_tokens(100)[:37]
    cut_stream_error(events)
    assert await sent_to(mock, WHOLE) == []


async def test_an_anthropic_prefill_trims_the_seam_and_repeats_nothing(
    mock: MockProcess, gateways: Gateways
) -> None:
    await forget(mock)
    tokens = reply_tokens(12)
    assert tokens[5] == "\n"  # the cut's text ends in whitespace, which a prefill may not
    env = continued_env(
        mock,
        "tokens=12,reset_after=6",
        WHOLE,
        PROVIDER_ORDER="groq,anthropic",
        ANTHROPIC_API_KEY="anthropic-test-key-0001",
        ANTHROPIC_BASE_URL=Mock(mock.url, None).base("tokens=12", flavour="anthropic"),  # type: ignore[arg-type]
    )
    gateway = await gateways(env)
    code, body = await stream(gateway)
    assert code == 200
    events = parse_sse(body)
    assert chunks(events) == tokens  # the "\n" the client saw is not sent twice
    assert ": continued from groq by anthropic\n" in body
    (asked,) = await sent_to(mock, "tokens=12")
    assert asked["messages"][-1] == {"role": "assistant", "content": "".join(tokens[:6]).rstrip()}
