"""Reading OpenTelemetry's standard variables into `TracingSettings`.

The OpenTelemetry SDK would read them itself; reading them here instead puts them under the
same rules as every other variable: checked at start-up with every problem listed, documented,
and their secrets (the exporter's headers usually carry an API key) masked and redacted.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote

from modelrouter.config.network import CONTROL, checked_url
from modelrouter.config.reader import Reader, flag, within
from modelrouter.config.structs import TRACE_SAMPLERS, TracingSettings

_DEFAULTS: Final = TracingSettings()
TRACES_PATH: Final = "/v1/traces"  # appended to OTEL_EXPORTER_OTLP_ENDPOINT, as the spec says


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
    )


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
