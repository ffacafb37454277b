"""Reading OpenTelemetry's standard variables into `TracingSettings`.

The OpenTelemetry SDK would read them itself; reading them here instead puts them under the
same rules as every other variable: checked at start-up with every problem listed, documented,
and their secrets (the exporter's headers usually carry an API key) masked and redacted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final
from urllib.parse import unquote

from modelrouter.config.network import CONTROL, checked_url
from modelrouter.config.reader import Reader, flag, within
from modelrouter.config.structs import TRACE_SAMPLERS, TracingSettings

_DEFAULTS: Final = TracingSettings()
TRACES_PATH: Final = "/v1/traces"  # appended to OTEL_EXPORTER_OTLP_ENDPOINT, as the spec says
MAX_MILLIS: Final = 86_400_000  # a day: a duration's bound (the worker's wait must be finite)


def read_tracing(r: Reader) -> TracingSettings:
    d = _DEFAULTS
    endpoint = _endpoint(r)
    sampler_name = (r.raw("OTEL_TRACES_SAMPLER", d.sampler) or d.sampler).lower()
    sampler = next((s for s in TRACE_SAMPLERS if s == sampler_name), None)
    if sampler is None:
        r.problems.append(
            f"OTEL_TRACES_SAMPLER={sampler_name!r} is not one of {', '.join(TRACE_SAMPLERS)}"
        )
        sampler = d.sampler
    return TracingSettings(
        endpoint=endpoint,
        headers=_headers(r),
        sampler=sampler,
        sampler_arg=r.get(
            "OTEL_TRACES_SAMPLER_ARG", d.sampler_arg, within(0.0, 1.0), "a ratio from 0 to 1"
        ),
        service_name=r.raw("OTEL_SERVICE_NAME", d.service_name) or d.service_name,
        capture_content=r.get(
            "OTEL_CAPTURE_CONTENT", d.capture_content, flag, "a flag (1/0, true/false)"
        ),
        **_batching(r),
    )


def _batching(r: Reader) -> dict[str, int]:
    """The batch span processor's OTEL_BSP_* settings, integers as the spec says (durations in
    milliseconds); a batch larger than the queue could never fill."""
    d = _DEFAULTS
    found = {
        "schedule_delay_ms": _millis(r, "OTEL_BSP_SCHEDULE_DELAY", d.schedule_delay_ms),
        "export_timeout_ms": _millis(r, "OTEL_BSP_EXPORT_TIMEOUT", d.export_timeout_ms),
        "max_queue_size": r.integer("OTEL_BSP_MAX_QUEUE_SIZE", d.max_queue_size, minimum=1),
        "max_export_batch_size": r.integer(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", d.max_export_batch_size, minimum=1
        ),
    }
    if found["max_export_batch_size"] > found["max_queue_size"]:
        r.problems.append(
            f"OTEL_BSP_MAX_EXPORT_BATCH_SIZE={found['max_export_batch_size']} is more than "
            f"OTEL_BSP_MAX_QUEUE_SIZE={found['max_queue_size']} (a batch must fit in the queue)"
        )
        found["max_export_batch_size"] = min(d.max_export_batch_size, found["max_queue_size"])
    return found


def _millis(r: Reader, name: str, default: int) -> int:
    rule = f"an integer number of milliseconds from 1 to {MAX_MILLIS}"
    return r.get(name, default, _whole_within(1, MAX_MILLIS), rule)


def _whole_within(minimum: int, maximum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not minimum <= value <= maximum:
            raise ValueError(text)
        return value

    return parse


def _endpoint(r: Reader) -> str | None:
    """The traces endpoint: the signal's own variable as given, else the base one + /v1/traces."""
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        value = r.raw(name)
        if value is None:
            continue
        if checked_url(r, name, value, ("http", "https")) is None:
            return None
        if name == "OTEL_EXPORTER_OTLP_ENDPOINT":
            return value.rstrip("/") + TRACES_PATH
        return value
    return None


def _headers(r: Reader) -> tuple[tuple[str, str], ...]:
    """`key=value,key2=value2`, values percent-decoded (the W3C Baggage format the spec names).
    Problems never quote a value: it is usually a credential."""
    text = r.raw("OTEL_EXPORTER_OTLP_HEADERS")
    if text is None:
        return ()
    headers: list[tuple[str, str]] = []
    for index, item in enumerate(filter(None, (part.strip() for part in text.split(","))), 1):
        name, equals, value = item.partition("=")
        name, value = name.strip(), unquote(value.strip())
        if not equals or not name or CONTROL.search(name + value) or " " in name:
            r.problems.append(
                f"OTEL_EXPORTER_OTLP_HEADERS: item {index} is not key=value (value not shown)"
            )
            continue
        headers.append((name, value))
    return tuple(headers)
