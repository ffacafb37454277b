"""The span export's batching: OTEL_BSP_* read and checked like every other variable, and given
to the SDK's batch processor and the OTLP exporter as configured."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
import requests
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from modelrouter.config import ConfigError, TracingSettings, load_settings
from modelrouter.observability import tracing
from modelrouter.observability.otlp_session import EnvironmentReadOnce

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}


def test_the_batching_defaults_are_the_specifications() -> None:
    settings = load_settings(ENDPOINT).tracing
    assert (
        settings.schedule_delay_ms,
        settings.max_queue_size,
        settings.max_export_batch_size,
        settings.export_timeout_ms,
    ) == (5000, 2048, 512, 30_000)


def test_the_batching_variables_are_read() -> None:
    settings = load_settings(
        {
            **ENDPOINT,
            "OTEL_BSP_SCHEDULE_DELAY": "250",
            "OTEL_BSP_MAX_QUEUE_SIZE": "100",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100",
            "OTEL_BSP_EXPORT_TIMEOUT": "7000",
        }
    ).tracing
    assert (
        settings.schedule_delay_ms,
        settings.max_queue_size,
        settings.max_export_batch_size,
        settings.export_timeout_ms,
    ) == (250, 100, 100, 7000)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OTEL_BSP_SCHEDULE_DELAY", "0"),
        ("OTEL_BSP_SCHEDULE_DELAY", "1.5"),  # the spec's durations are whole milliseconds
        ("OTEL_BSP_SCHEDULE_DELAY", "5s"),
        ("OTEL_BSP_SCHEDULE_DELAY", "86400001"),  # more than a day
        ("OTEL_BSP_EXPORT_TIMEOUT", "-1"),
        ("OTEL_BSP_EXPORT_TIMEOUT", "inf"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "many"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "0"),
    ],
)
def test_an_invalid_batching_value_is_a_configuration_error(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**ENDPOINT, name: value})
    assert [p for p in caught.value.problems if p.startswith(f"{name}={value!r} is not")]


def test_a_batch_larger_than_the_queue_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {**ENDPOINT, "OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "101"}
        )
    (problem,) = caught.value.problems
    assert "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=101" in problem
    assert "OTEL_BSP_MAX_QUEUE_SIZE=100" in problem


def test_every_batching_problem_is_listed_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                **ENDPOINT,
                "OTEL_BSP_SCHEDULE_DELAY": "soon",
                "OTEL_BSP_MAX_QUEUE_SIZE": "-5",
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "x",
                "OTEL_BSP_EXPORT_TIMEOUT": "0",
            }
        )
    named = {problem.split("=", 1)[0] for problem in caught.value.problems}
    assert named == {
        "OTEL_BSP_SCHEDULE_DELAY",
        "OTEL_BSP_MAX_QUEUE_SIZE",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        "OTEL_BSP_EXPORT_TIMEOUT",
    }


class _Recording(SpanExporter):
    """Keeps the size of each batch; `release` lets a held export return."""

    def __init__(self, *, hold: bool = False) -> None:
        self.batches: list[int] = []
        self.exported = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.batches.append(len(spans))
        self.exported.set()
        self.release.wait()
        return SpanExportResult.SUCCESS


def _end_spans(processor: object, count: int) -> None:
    provider = TracerProvider()
    provider.add_span_processor(processor)  # type: ignore[arg-type]
    tracer = provider.get_tracer("test")
    for index in range(count):
        tracer.start_span(f"span {index}").end()


def test_the_processor_sends_a_full_batch_at_once_and_never_more() -> None:
    # The timer would wait a day: the export below is the batch-full wake-up.
    settings = TracingSettings(
        endpoint="http://collector:4318/v1/traces",
        schedule_delay_ms=86_400_000,
        max_export_batch_size=3,
        max_queue_size=10,
    )
    exporter = _Recording()
    processor = tracing.batch_processor(settings, exporter)
    try:
        _end_spans(processor, 3)
        assert exporter.exported.wait(timeout=30)
        assert exporter.batches == [3]
        _end_spans(processor, 5)
    finally:
        processor.shutdown()  # exports the rest, a batch at a time
    assert sum(exporter.batches) == 8
    assert max(exporter.batches) == 3


def test_the_processor_drops_what_its_queue_cannot_hold() -> None:
    settings = TracingSettings(
        endpoint="http://collector:4318/v1/traces",
        schedule_delay_ms=86_400_000,
        max_export_batch_size=2,
        max_queue_size=4,
    )
    exporter = _Recording(hold=True)
    processor = tracing.batch_processor(settings, exporter)
    try:
        _end_spans(processor, 2)  # a full batch: the worker takes it and is held exporting it
        assert exporter.exported.wait(timeout=30)
        _end_spans(processor, 6)  # the queue keeps 4 of these
    finally:
        exporter.release.set()
        processor.shutdown()
    assert sum(exporter.batches) == 2 + 4


def test_the_otlp_exporter_is_given_the_export_timeout() -> None:
    settings = load_settings({**ENDPOINT, "OTEL_BSP_EXPORT_TIMEOUT": "1500"}).tracing
    exporter = tracing._otlp_exporter(settings)
    try:
        # The SDK's processor does not apply its own export timeout: the exporter's deadline
        # (its retries included) is the one that bounds an export.
        assert exporter._client._timeout == 1.5  # type: ignore[attr-defined]
    finally:
        exporter.shutdown()


URL = "http://collector.example:4318/v1/traces"


def _what_requests_would_do(session: requests.Session) -> tuple[object, ...]:
    merged = session.merge_environment_settings(URL, {}, None, None, None)
    prepared = session.prepare_request(requests.Request("POST", URL, data=b"x"))
    return merged["proxies"], merged["verify"], prepared.headers.get("Authorization")


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"HTTP_PROXY": "http://proxy.example:3128"},
        {"HTTP_PROXY": "http://proxy.example:3128", "NO_PROXY": "collector.example"},
        {"REQUESTS_CA_BUNDLE": "/etc/ssl/collector-ca.pem"},
        {"CURL_CA_BUNDLE": "/etc/ssl/curl-ca.pem"},
        {"NETRC": "netrc"},
    ],
)
def test_the_export_session_reads_the_environment_once_as_requests_would(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE"):
        for spelled in (name, name.lower()):
            monkeypatch.delenv(spelled, raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "absent"))
    (tmp_path / "netrc").write_text("machine collector.example login team password s3cret\n")
    for name, value in env.items():
        monkeypatch.setenv(name, str(tmp_path / value) if name == "NETRC" else value)
    ours = EnvironmentReadOnce(URL)
    expected = _what_requests_would_do(requests.Session())
    assert _what_requests_would_do(ours) == expected
    # Read once: what the environment says later is not read again.
    monkeypatch.setenv("HTTP_PROXY", "http://elsewhere.example:8080")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/elsewhere.pem")
    assert _what_requests_would_do(ours) == expected
