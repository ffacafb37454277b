"""Rendered log lines: one JSON object per line, the request id on each, no credential anywhere.

`structlog.testing.capture_logs()` sees events before the processors run, so these tests read
what the configured chain actually writes: `configure_logging(stream=StringIO)`.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from aiohttp import web

from modelrouter.config import describe, load_settings
from modelrouter.observability import configure_logging
from modelrouter.observability.logging import flush_logs
from modelrouter.web import create_app
from modelrouter.web.accounting import ACCOUNTING
from modelrouter.web.runtime import RUNTIME
from tests.conftest import (
    CLIENT_KEY,
    GROQ_KEY,
    OPENROUTER_KEY,
    USER,
    Mock,
    free_port,
    two_providers,
    wait_until,
)

SECRETS = (GROQ_KEY, OPENROUTER_KEY, CLIENT_KEY)
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


class Lines:
    """The rendered output of the configured chain."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()

    def clear(self) -> None:
        self.buffer.seek(0)
        self.buffer.truncate()

    @property
    def text(self) -> str:
        return self.buffer.getvalue()

    def parsed(self) -> list[dict[str, Any]]:
        rendered = [json.loads(line) for line in self.text.split("\n") if line]  # one per line
        # The in-process mock provider is another server, with its own access log.
        return [line for line in rendered if line.get("logger") != "aiohttp.access"]

    def events(self) -> list[str]:
        return [line["event"] for line in self.parsed()]


@pytest.fixture
def lines() -> Iterator[Lines]:
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = Lines()
    configure_logging(level="DEBUG", fmt="json", stream=out.buffer, cache=False, secrets=SECRETS)
    yield out
    configure_logging(level="DEBUG", fmt="json", cache=False)
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def production_gateway(aiohttp_client: Any) -> Any:
    """A gateway served as `modelrouter serve` serves it: no access log, handler cancellation."""

    async def start(**env: str) -> Any:
        defaults = {"PROVIDER_ORDER": "groq,openrouter", "API_KEY": CLIENT_KEY}
        app = create_app(load_settings(defaults | env))
        kwargs = {"access_log": None, "handler_cancellation": True}
        return await aiohttp_client(app, server_kwargs=kwargs)

    return start


async def settle(client: Any, lines: Lines) -> None:
    """Wait until the request's last line is out and its attempts have reported back."""
    providers = client.app[RUNTIME].system.router.providers.values()

    async def quiet() -> bool:
        idle = all(p.view().in_flight == 0 and p.mailbox_depth == 0 for p in providers)
        return idle and "request_finished" in lines.events()

    await wait_until(quiet)
    for _ in range(3):
        await asyncio.sleep(0)


def assert_clean(lines: Lines, request_id: str, *texts: str) -> None:
    rendered = lines.parsed()
    assert rendered, "the request was logged"
    for line in rendered:
        assert line.get("request_id") == request_id, line
    for text in (lines.text, *texts):
        for secret in SECRETS:
            assert secret not in text


# (name, environment, path, body, status, events that must be there, an echo was redacted)
ERROR_PATHS: list[tuple[str, dict[str, str], str, Any, int, set[str], bool]] = [
    (
        "echoed_401_falls_over",
        {"groq": "status=401,echo_auth=1"},
        "/chat",
        USER,
        200,
        {"attempt_failed", "provider_blacklisted", "fallback", "request_finished"},
        True,
    ),
    (
        "echoed_401_without_fallback",
        {"groq": "status=401,echo_auth=1"},
        "/chat",
        {**USER, "provider": "groq", "fallback": False},
        502,
        {"attempt_failed", "provider_blacklisted", "request_finished"},
        True,
    ),
    (
        "every_provider_echoes_a_500",
        {"groq": "status=500,echo_auth=1", "openrouter": "status=500,echo_auth=1"},
        "/chat",
        USER,
        502,
        {"attempt_failed", "fallback", "request_finished"},
        True,
    ),
    (
        "echoed_429_falls_over",
        {"groq": "status=429,retry_after=5,echo_auth=1"},
        "/chat",
        USER,
        200,
        {"attempt_failed", "fallback"},
        True,
    ),
    (
        "stream_cut_by_an_echoed_error",
        {"groq": "stream_error_after=2,echo_auth=1"},
        "/stream",
        USER,
        200,
        {"attempt_failed", "provider_blacklisted", "request_finished"},
        True,
    ),
    (
        "stream_error_before_first_chunk",
        {"groq": "stream_error_after=0,echo_auth=1"},
        "/stream",
        USER,
        200,
        {"attempt_failed", "fallback"},
        True,
    ),
    ("malformed_body", {"groq": "malformed=1"}, "/chat", USER, 200, {"fallback"}, False),
    (
        "timeout",
        {"groq": "first_delay=2", "PROVIDER_TIMEOUT": "0.2"},
        "/chat",
        USER,
        200,
        {"fallback"},
        False,
    ),
    (
        "connect_error",
        {"GROQ_BASE_URL": "unreachable"},
        "/chat",
        USER,
        200,
        {"fallback"},
        False,
    ),
    ("bad_request", {}, "/chat", b"{", 400, {"request_finished"}, False),
    ("unknown_route", {}, "/nowhere", USER, 404, {"request_finished"}, False),
]


@pytest.mark.parametrize(
    ("env", "path", "body", "status", "expected", "echoed"),
    [pytest.param(*case[1:], id=case[0]) for case in ERROR_PATHS],
)
async def test_error_path_lines_carry_the_request_id_and_no_secret(
    production_gateway: Any,
    mock: Mock,
    lines: Lines,
    env: dict[str, str],
    path: str,
    body: Any,
    status: int,
    expected: set[str],
    echoed: bool,
) -> None:
    groq, openrouter = env.get("groq", ""), env.get("openrouter", "")
    extra = {k: v for k, v in env.items() if k.isupper()}
    settings = two_providers(mock, groq=groq, openrouter=openrouter, **extra)
    if settings["GROQ_BASE_URL"] == "unreachable":
        settings["GROQ_BASE_URL"] = f"http://127.0.0.1:{free_port()}/v1"
    client = await production_gateway(**settings)
    lines.clear()
    request_id = f"req-{path.strip('/')}-{status}"
    headers = {**AUTH, "X-Request-ID": request_id}
    if isinstance(body, bytes):
        response = await client.post(path, data=body, headers=headers)
    else:
        response = await client.post(path, json=body, headers=headers)
    answer = await response.text()
    assert response.status == status, answer
    await settle(client, lines)
    assert expected <= set(lines.events())
    assert_clean(lines, request_id, answer)
    if echoed:
        assert "[REDACTED]" in lines.text, "the provider echoed a credential that was removed"
    if status >= 400:
        assert json.loads(answer)["error"]["request_id"] == request_id


async def test_echoed_credential_reaches_neither_log_nor_client(
    production_gateway: Any, mock: Mock, lines: Lines
) -> None:
    """The mock really echoes the key; the client's error and every line come out without it."""
    async with mock.session.post(
        f"{mock.base('status=401,echo_auth=1')}/chat/completions",
        json={"model": "m", **USER},
        headers={"Authorization": f"Bearer {GROQ_KEY}"},
    ) as raw:
        assert GROQ_KEY in await raw.text(), "the mock echoes what it received"
    client = await production_gateway(**two_providers(mock, groq="status=401,echo_auth=1"))
    lines.clear()
    body = {**USER, "provider": "groq", "fallback": False}
    response = await client.post("/chat", json=body, headers={**AUTH, "X-Request-ID": "echo-1"})
    error = await response.json()
    assert response.status == 502
    assert "auth_error" in error["error"]["message"]
    assert "[REDACTED]" in error["error"]["message"]
    await settle(client, lines)
    assert_clean(lines, "echo-1", json.dumps(error))


async def test_internal_errors_are_logged_redacted_with_the_request_id(
    production_gateway: Any, mock: Mock, lines: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash in the handler, in the routing job and in the upstream job: three tasks."""

    def leak(*_: Any, **__: Any) -> Any:
        raise RuntimeError(f"exploded near {GROQ_KEY} and Bearer {OPENROUTER_KEY}")

    client = await production_gateway(**two_providers(mock))
    monkeypatch.setattr("modelrouter.actors.provider.run_attempt", leak)
    lines.clear()
    response = await client.post("/chat", json=USER, headers={**AUTH, "X-Request-ID": "crash-1"})
    answer = await response.text()
    assert response.status == 502
    await settle(client, lines)
    assert "attempt_crashed" in lines.events()
    crashed = next(line for line in lines.parsed() if line["event"] == "attempt_crashed")
    assert "RuntimeError" in crashed["exception"]
    assert "[REDACTED]" in crashed["exception"]
    assert_clean(lines, "crash-1", answer)

    monkeypatch.setattr("modelrouter.actors.fallback.Fallback.run", leak)
    lines.clear()
    response = await client.post("/chat", json=USER, headers={**AUTH, "X-Request-ID": "crash-2"})
    assert response.status == 502
    await settle(client, lines)
    assert "routing_crashed" in lines.events()
    assert_clean(lines, "crash-2", await response.text())

    monkeypatch.setattr("modelrouter.web.chat.read_request", leak)
    lines.clear()
    response = await client.post("/chat", json=USER, headers={**AUTH, "X-Request-ID": "crash-3"})
    assert response.status == 500
    await settle(client, lines)
    assert "unhandled_error" in lines.events()
    assert_clean(lines, "crash-3", await response.text())


async def test_client_disconnect_is_logged_as_499_with_its_request_id(
    production_gateway: Any, mock: Mock, lines: Lines
) -> None:
    client = await production_gateway(**two_providers(mock, groq="stall_after=2"))
    lines.clear()
    headers = {**AUTH, "X-Request-ID": "gone-1"}
    response = await client.post("/stream", json=USER, headers=headers)
    await response.content.readuntil(b"\n\n")
    response.close()
    await settle(client, lines)
    finished = [line for line in lines.parsed() if line["event"] == "request_finished"]
    assert [(f["status"], f["provider"]) for f in finished] == [(499, "groq")]
    assert_clean(lines, "gone-1")


async def test_request_lines_say_what_happened(
    production_gateway: Any, mock: Mock, lines: Lines
) -> None:
    client = await production_gateway(**two_providers(mock, groq="status=500"))
    lines.clear()
    await client.post("/chat", json=USER, headers={**AUTH, "X-Request-ID": "end-1"})
    await settle(client, lines)
    rendered = {line["event"]: line for line in lines.parsed()}
    assert rendered["request_started"]["route"] == "/chat"
    end = rendered["request_finished"]
    assert end["level"] == "info"
    assert (end["route"], end["method"], end["status"]) == ("/chat", "POST", 200)
    assert (end["provider"], end["model"], end["attempts"]) == ("openrouter", end["model"], 2)
    assert (end["prompt_tokens"], end["completion_tokens"]) == (2, 8)
    assert isinstance(end["latency_ms"], float)
    assert "timestamp" in end
    fallback = rendered["fallback"]
    assert (fallback["from_provider"], fallback["to_provider"]) == ("groq", "openrouter")
    assert fallback["reason"] == "server_error"


async def test_the_answer_is_sent_before_its_request_line_is_written(
    production_gateway: Any, mock: Mock, lines: Lines
) -> None:
    """The line and the metrics are after-work: the client must not wait for them."""
    client = await production_gateway(**two_providers(mock))
    sent: list[web.StreamResponse] = []
    prepared_when_logged: list[bool] = []
    middleware = sys.modules["modelrouter.web.middleware"]
    accounting = sys.modules["modelrouter.web.accounting"]
    finished = accounting._finished

    def spy(request: web.Request, *args: Any, **kwargs: Any) -> None:
        prepared_when_logged.append(sent[0].prepared)
        finished(request, *args, **kwargs)

    original = middleware.error_response

    def keep(*args: Any, **kwargs: Any) -> web.Response:
        sent.append(original(*args, **kwargs))
        return sent[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(accounting, "_finished", spy)
        patch.setattr(middleware, "error_response", keep)
        response = await client.post("/chat", data=b"{", headers=AUTH)
        client.app[ACCOUNTING].drain()  # what its timer does a moment later
    assert response.status == 400
    assert prepared_when_logged == [True], "the response went out before the line"


async def test_request_ends_are_recorded_later_and_a_scrape_sees_them_all(
    production_gateway: Any, mock: Mock, lines: Lines
) -> None:
    client = await production_gateway(**two_providers(mock))
    client.app[ACCOUNTING].delay = 60.0  # nothing is drained by the timer in this test
    lines.clear()
    for request_id in ("late-1", "late-2"):
        response = await client.post(
            "/chat", json=USER, headers={**AUTH, "X-Request-ID": request_id}
        )
        assert response.status == 200
    assert "request_finished" not in lines.events(), "recorded after the answer, not before"
    page = await (await client.get("/metrics")).text()
    assert 'modelrouter_requests_total{method="POST",route="/chat",status="200"} 2.0' in page
    finished = [line for line in lines.parsed() if line["event"] == "request_finished"]
    assert [line["request_id"] for line in finished] == ["late-1", "late-2"]


async def test_blacklist_and_recovery_are_logged_with_the_request_that_caused_them(
    production_gateway: Any, mock: Mock, lines: Lines
) -> None:
    env = two_providers(mock, groq="status=500,fail_first=1", BACKOFF_BASE_SECONDS="0")
    client = await production_gateway(**env)
    lines.clear()
    await client.post("/chat", json=USER, headers={**AUTH, "X-Request-ID": "fail-1"})
    await settle(client, lines)
    blacklisted = [line for line in lines.parsed() if line["event"] == "provider_blacklisted"]
    assert [(b["provider"], b["reason"], b["request_id"]) for b in blacklisted] == [
        ("groq", "server_error", "fail-1")
    ]
    lines.clear()
    await client.post("/chat", json=USER, headers={**AUTH, "X-Request-ID": "probe-1"})
    await settle(client, lines)
    recovered = [line for line in lines.parsed() if line["event"] == "provider_recovered"]
    assert [(r["provider"], r["request_id"]) for r in recovered] == [("groq", "probe-1")]


def test_redaction_reaches_nested_values_and_exception_text(lines: Lines) -> None:
    configure_logging(
        level="DEBUG",
        fmt="json",
        secrets=[*SECRETS, "plain-configured-secret-7"],
        stream=lines.buffer,
        cache=False,
    )
    log = structlog.get_logger("test")
    log.warning(
        "upstream_said",
        body={"error": {"message": f"bad key {GROQ_KEY}", "seen": [f"Bearer {OPENROUTER_KEY}"]}},
        raw=f"token=plain-configured-secret-7 {GROQ_KEY}".encode(),
        error=ValueError(f"rejected {GROQ_KEY}"),
        pair=("ok", f"x-api-key: {OPENROUTER_KEY}"),
        count=3,
        ratio=0.5,
        flag=True,
        nothing=None,
    )
    try:
        raise ConnectionError(f"upstream echoed Authorization: Bearer {GROQ_KEY}")
    except ConnectionError:
        log.exception("attempt_crashed")
    first, second = lines.parsed()
    assert first["body"]["error"]["message"] == "bad key [REDACTED]"
    assert first["body"]["error"]["seen"] == ["Bearer [REDACTED]"]
    assert first["raw"] == "token=[REDACTED] [REDACTED]"
    assert first["error"] == "ValueError: rejected [REDACTED]"
    assert first["pair"] == ["ok", "x-api-key: [REDACTED]"]
    assert (first["count"], first["ratio"], first["flag"], first["nothing"]) == (3, 0.5, True, None)
    assert "ConnectionError" in second["exception"]
    assert "Bearer [REDACTED]" in second["exception"]
    for secret in (*SECRETS, "plain-configured-secret-7"):
        assert secret not in lines.text


def test_redaction_survives_cycles_and_deep_nesting(lines: Lines) -> None:
    loop: list[Any] = [GROQ_KEY]
    loop.append(loop)
    deep: Any = GROQ_KEY
    for _ in range(20):
        deep = {"d": deep}
    structlog.get_logger().info("odd_shapes", loop=loop, deep=deep)
    assert GROQ_KEY not in lines.text
    assert lines.parsed()[0]["event"] == "odd_shapes"


def test_standard_library_records_use_the_same_chain(lines: Lines) -> None:
    with structlog.contextvars.bound_contextvars(request_id="std-1"):
        logging.getLogger("aiohttp.server").error("Error handling request: Bearer %s", GROQ_KEY)
    (line,) = lines.parsed()
    assert line["event"] == "Error handling request: Bearer [REDACTED]"
    assert (line["level"], line["request_id"]) == ("error", "std-1")


def test_console_format_and_level_filter(lines: Lines) -> None:
    configure_logging(level="WARNING", fmt="console", stream=lines.buffer, cache=False)
    log = structlog.get_logger()
    log.info("not_shown")
    log.warning("provider_blacklisted", provider="groq", detail=f"echo {GROQ_KEY}")
    text = lines.text
    assert "not_shown" not in text
    assert "provider_blacklisted" in text
    assert "provider=groq" in text
    assert GROQ_KEY not in text
    assert "[REDACTED]" in text


def test_start_up_configuration_line_masks_every_secret(lines: Lines) -> None:
    env = {
        "PROVIDER_ORDER": "groq,openrouter",
        "GROQ_API_KEY": GROQ_KEY,
        "OPENROUTER_API_KEY": OPENROUTER_KEY,
        "API_KEY": CLIENT_KEY,
        "REDIS_URL": "redis://:redis-password-4242@redis:6379/0",
    }
    settings = load_settings(env)
    structlog.get_logger().info("config", **describe(settings))
    (line,) = lines.parsed()
    assert [p["name"] for p in line["providers"]] == ["groq", "openrouter"]
    for secret in (*SECRETS, "redis-password-4242"):
        assert secret not in lines.text


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


async def test_info_lines_go_out_together_and_warnings_at_once_in_order() -> None:
    saved = structlog.get_config()
    out = CountingStream()
    configure_logging(level="INFO", stream=out, cache=False, delay=0.05)
    try:
        log = structlog.get_logger("test")
        log.info("first")
        log.info("second")
        assert out.getvalue() == "", "INFO lines wait for the batch"
        log.warning("third")
        events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
        assert events == ["first", "second", "third"], "a warning goes out at once, in order"
        assert out.writes == 1, "one write for the whole batch"
        log.info("fourth")
        await asyncio.sleep(0.15)
        assert json.loads(out.getvalue().splitlines()[-1])["event"] == "fourth", "within delay"
        log.info("fifth")
        flush_logs()  # as at exit
        assert json.loads(out.getvalue().splitlines()[-1])["event"] == "fifth"
    finally:
        structlog.configure(**saved)
        configure_logging(level="DEBUG", fmt="json", cache=False)  # as tests/conftest.py


def test_lines_outside_an_event_loop_are_written_at_once() -> None:
    saved = structlog.get_config()
    out = io.StringIO()
    configure_logging(level="INFO", stream=out, cache=False, delay=5.0)
    try:
        structlog.get_logger("test").info("at start-up")
        assert "at start-up" in out.getvalue()
    finally:
        structlog.configure(**saved)
        configure_logging(level="DEBUG", fmt="json", cache=False)
