"""The fault matrix, upstream side: each row is one fault of the first provider (groq, on the mock
provider) behind a real gateway process, with a healthy second provider (openrouter).

Every row asserts what the client gets, what the metrics say, and that nothing leaks afterwards
(client and upstream connections, tasks, requests, streams and attempts in flight)."""

from __future__ import annotations

import email.utils
import time

import pytest

from modelrouter.mock.text import reply_tokens
from tests.faults.conftest import Gateways
from tests.faults.support import (
    AUTH,
    USER,
    MockProcess,
    answered,
    chunks,
    error_data,
    fault_env,
    no_leaks,
    read_stream,
    session,
)

STREAM_TOKENS = reply_tokens(8)  # the mock's answer at its default length


async def chat(url: str, body: dict[str, object] | None = None) -> tuple[int, dict[str, object]]:
    async with (
        session() as client,
        client.post(f"{url}/chat", json=body or USER, headers=AUTH) as r,
    ):
        return r.status, await r.json()


async def stream(url: str, route: str = "/stream") -> tuple[int, list[tuple[str, str]]]:
    body: dict[str, object] = dict(USER)
    if route != "/stream":
        body |= {"model": "auto", "stream": True}
    async with session() as client, client.post(f"{url}{route}", json=body, headers=AUTH) as r:
        return r.status, await read_stream(r)


def failures(page: object, reason: str, provider: str = "groq") -> float:
    return page.value(  # type: ignore[attr-defined, no-any-return]
        "modelrouter_provider_failures_total", provider=provider, reason=reason
    )


@pytest.mark.parametrize(
    ("status", "reason"),
    [(500, "server_error"), (502, "server_error"), (503, "server_error"), (504, "timeout")],
)
async def test_upstream_5xx_falls_over_to_the_next_provider(
    mock: MockProcess, gateways: Gateways, status: int, reason: str
) -> None:
    spec = f"status={status}"
    gateway = await gateways(fault_env(mock, groq=spec))
    code, body = await chat(gateway.url)
    assert code == 200
    assert body["provider"] == "openrouter"
    assert body["attempts"] == 2
    page = await no_leaks(gateway, mock)
    assert failures(page, reason) == 1
    assert (
        page.value(
            "modelrouter_fallbacks_total",
            from_provider="groq",
            to_provider="openrouter",
            reason=reason,
        )
        == 1
    )
    assert page.value("modelrouter_provider_state", provider="groq") == 2  # blacklisted
    assert answered(page, "/chat", 200) == 1
    assert await mock.count(spec) == 1
    assert not gateway.secrets_in_log()


def _http_date(seconds_ahead: float) -> str:
    return email.utils.formatdate(time.time() + seconds_ahead, usegmt=True)


# (Retry-After as sent, the blacklist it should give: base 2 s +-10%, or what the header says)
RETRY_AFTER = {
    "seconds": ("7", 7.0),
    "http_date": (None, 30.0),  # 30 s ahead, written at the time of the test
    "absent": ("none", 2.0),
    "negative": ("-5", 2.0),
    "garbage": ("soon-ish", 2.0),
}


@pytest.mark.parametrize("form", list(RETRY_AFTER))
async def test_upstream_429_blacklists_for_its_retry_after(
    mock: MockProcess, gateways: Gateways, form: str
) -> None:
    header, expected = RETRY_AFTER[form]
    value = _http_date(30) if header is None else header
    spec = f"status=429,retry_after={value.replace(' ', '%20').replace(',', '%2C')}"
    gateway = await gateways(fault_env(mock, groq=spec))
    code, body = await chat(gateway.url)
    assert code == 200
    assert body["provider"] == "openrouter"
    groq = (await gateway.health())["providers"]["groq"]
    assert groq["state"] == "blacklisted"
    assert groq["last_reason"] == "rate_limited"
    left = _seconds_until(groq["blacklisted_until"])
    assert expected * 0.85 - 1.5 <= left <= expected * 1.1 + 0.5, (form, left)
    page = await no_leaks(gateway, mock)
    assert failures(page, "rate_limited") == 1
    assert (
        page.value(
            "modelrouter_fallbacks_total",
            from_provider="groq",
            to_provider="openrouter",
            reason="rate_limited",
        )
        == 1
    )


async def test_upstream_429_with_a_huge_retry_after_blacklists_for_backoff_max_at_most(
    mock: MockProcess, gateways: Gateways
) -> None:
    """Retry-After: 99999999 once blacklisted groq until 2030; BACKOFF_MAX_SECONDS bounds it."""
    spec = "status=429,retry_after=99999999"
    gateway = await gateways(fault_env(mock, groq=spec, BACKOFF_MAX_SECONDS="60"))
    code, body = await chat(gateway.url)
    assert code == 200
    assert body["provider"] == "openrouter"
    groq = (await gateway.health())["providers"]["groq"]
    assert groq["state"] == "blacklisted"
    assert _seconds_until(groq["blacklisted_until"]) <= 60 * 1.1
    await no_leaks(gateway, mock)


def _seconds_until(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp() - time.time()


@pytest.mark.parametrize("status", [401, 403])
async def test_upstream_auth_error_falls_over_and_blacklists_for_backoff_max(
    mock: MockProcess, gateways: Gateways, status: int
) -> None:
    spec = f"status={status}"
    gateway = await gateways(fault_env(mock, groq=spec))
    code, body = await chat(gateway.url)
    assert code == 200
    assert body["provider"] == "openrouter"
    groq = (await gateway.health())["providers"]["groq"]
    assert groq["last_reason"] == "auth_error"
    assert _seconds_until(groq["blacklisted_until"]) > 50  # BACKOFF_MAX_SECONDS=60, jitter
    page = await no_leaks(gateway, mock)
    assert failures(page, "auth_error") == 1


async def test_slow_first_byte_falls_over_within_first_chunk_timeout(
    mock: MockProcess, gateways: Gateways
) -> None:
    spec = "first_delay=5"
    gateway = await gateways(fault_env(mock, groq=spec))
    started = time.monotonic()
    code, events = await stream(gateway.url)
    assert code == 200
    assert chunks(events) == STREAM_TOKENS
    assert events[-1] == ("message", "[DONE]")
    assert time.monotonic() - started < 4  # FIRST_CHUNK_TIMEOUT=1, not the upstream's 5 s
    page = await no_leaks(gateway, mock)
    assert failures(page, "first_chunk_timeout") == 1
    assert (
        page.value(
            "modelrouter_fallbacks_total",
            from_provider="groq",
            to_provider="openrouter",
            reason="first_chunk_timeout",
        )
        == 1
    )


async def test_stall_mid_stream_ends_the_stream_with_an_error_event(
    mock: MockProcess, gateways: Gateways
) -> None:
    gateway = await gateways(fault_env(mock, groq="stall_after=2"))
    code, events = await stream(gateway.url)
    assert code == 200
    assert chunks(events) == STREAM_TOKENS[:2]
    error = error_data(events)
    assert error["type"] == "upstream_error"
    assert error["retryable"] is True
    assert "timeout" in error["message"]
    page = await no_leaks(gateway, mock)
    assert failures(page, "timeout") == 1
    assert page.value("modelrouter_active_streams") == 0


async def test_reset_before_the_first_chunk_falls_over(
    mock: MockProcess, gateways: Gateways
) -> None:
    gateway = await gateways(fault_env(mock, groq="reset_after=0"))
    code, events = await stream(gateway.url)
    assert code == 200
    assert chunks(events) == STREAM_TOKENS
    assert events[-1] == ("message", "[DONE]")
    page = await no_leaks(gateway, mock)
    assert failures(page, "connect_error") == 1


async def test_reset_after_the_first_chunk_ends_the_stream_with_an_error_event(
    mock: MockProcess, gateways: Gateways
) -> None:
    gateway = await gateways(fault_env(mock, groq="reset_after=3"))
    code, events = await stream(gateway.url, "/v1/chat/completions")
    assert code == 200
    error = error_data(events)
    assert error["code"] == "upstream_error"
    assert error["retryable"] is True
    assert "request_id" in error
    page = await no_leaks(gateway, mock)
    assert failures(page, "connect_error") == 1


async def test_truncated_body_falls_over(mock: MockProcess, gateways: Gateways) -> None:
    gateway = await gateways(fault_env(mock, groq="truncate=1"))
    code, body = await chat(gateway.url)
    assert code == 200
    assert body["provider"] == "openrouter"
    page = await no_leaks(gateway, mock)
    assert failures(page, "connect_error") == 1


async def test_truncated_stream_ends_with_an_error_event(
    mock: MockProcess, gateways: Gateways
) -> None:
    gateway = await gateways(fault_env(mock, groq="truncate=1"))
    code, events = await stream(gateway.url)
    assert code == 200
    assert chunks(events) == STREAM_TOKENS[:1]
    assert error_data(events)["type"] == "upstream_error"
    page = await no_leaks(gateway, mock)
    assert failures(page, "connect_error") == 1


async def test_stream_without_done_ends_with_an_error_event_not_a_done(
    mock: MockProcess, gateways: Gateways
) -> None:
    gateway = await gateways(fault_env(mock, groq="no_done=1"))
    code, events = await stream(gateway.url)
    assert code == 200
    assert chunks(events) == STREAM_TOKENS
    error = error_data(events)
    assert "end marker" in error["message"]
    page = await no_leaks(gateway, mock)
    assert failures(page, "bad_response") == 1


async def test_error_object_inside_a_stream_ends_it_with_an_error_event(
    mock: MockProcess, gateways: Gateways
) -> None:
    gateway = await gateways(fault_env(mock, groq="stream_error_after=2"))
    code, events = await stream(gateway.url)
    assert code == 200
    assert chunks(events) == STREAM_TOKENS[:2]
    assert "mock stream error" in error_data(events)["message"]
    page = await no_leaks(gateway, mock)
    assert page.total("modelrouter_provider_failures_total", provider="groq") == 1


async def test_error_object_before_the_first_chunk_falls_over(
    mock: MockProcess, gateways: Gateways
) -> None:
    gateway = await gateways(fault_env(mock, groq="stream_error_after=0"))
    code, events = await stream(gateway.url)
    assert code == 200
    assert chunks(events) == STREAM_TOKENS
    page = await no_leaks(gateway, mock)
    assert page.total("modelrouter_provider_failures_total", provider="groq") == 1


@pytest.mark.parametrize("route", ["/chat", "/stream"])
async def test_html_with_status_200_is_a_bad_response_and_falls_over(
    mock: MockProcess, gateways: Gateways, route: str
) -> None:
    gateway = await gateways(fault_env(mock, groq="html=1"))
    if route == "/chat":
        code, body = await chat(gateway.url)
        assert (code, body["provider"]) == (200, "openrouter")
    else:
        code, events = await stream(gateway.url)
        assert code == 200
        assert chunks(events) == STREAM_TOKENS
    page = await no_leaks(gateway, mock)
    assert failures(page, "bad_response") == 1


async def test_upstream_that_never_closes_a_stream_is_finished_at_its_end_marker(
    mock: MockProcess, gateways: Gateways
) -> None:
    gateway = await gateways(fault_env(mock, groq="hold_open=1"))
    started = time.monotonic()
    code, events = await stream(gateway.url)
    assert code == 200
    assert chunks(events) == STREAM_TOKENS
    assert events[-1] == ("message", "[DONE]")
    assert time.monotonic() - started < 1.5  # not PROVIDER_TIMEOUT, not the upstream's hold
    page = await no_leaks(gateway, mock)  # the held connection is closed, not pooled
    assert page.value("modelrouter_provider_success_total", provider="groq") == 1


async def test_upstream_that_never_closes_a_whole_answer_times_out_and_falls_over(
    mock: MockProcess, gateways: Gateways
) -> None:
    gateway = await gateways(fault_env(mock, groq="hold_open=1"))
    code, body = await chat(gateway.url)
    assert (code, body["provider"]) == (200, "openrouter")
    page = await no_leaks(gateway, mock)
    assert failures(page, "timeout") == 1


async def test_every_provider_down_answers_within_the_deadline_after_one_attempt_each(
    mock: MockProcess, gateways: Gateways
) -> None:
    from tests.conftest import free_port

    closed = f"http://127.0.0.1:{free_port()}/v1"
    env = fault_env(mock, GROQ_BASE_URL=closed, OPENROUTER_BASE_URL=closed)
    gateway = await gateways(env | {"MAX_OPERATION_TIMEOUT": "5"})
    started = time.monotonic()
    code, body = await chat(gateway.url)
    assert code == 502
    error = body["error"]
    assert isinstance(error, dict)
    assert error["type"] == "upstream_error"
    assert "groq" in error["message"]
    assert "openrouter" in error["message"]
    assert time.monotonic() - started < 5
    page = await no_leaks(gateway, mock)
    assert failures(page, "connect_error") == 1
    assert failures(page, "connect_error", "openrouter") == 1
    # The next request finds both blacklisted: one forced attempt (the earliest to return),
    # not a loop, and an answer at once.
    started = time.monotonic()
    code, body = await chat(gateway.url)
    assert code == 502
    assert time.monotonic() - started < 5
    page = await no_leaks(gateway, mock)
    assert page.total("modelrouter_provider_failures_total") == 3
