"""Which requests are traced, decided before any OpenTelemetry object exists.

The SDK decides sampling only once it has started a span, and starting even a span it then
drops costs tens of microseconds (context lookups, its sampler chain, id generation). At a ratio
of 0.01 that would be paid by the 99% of requests nobody sees. So the gateway reads the
caller's `traceparent` and decides here, with the samplers' standard meaning; the SDK is called
only for the requests kept (and then always records).
"""

from __future__ import annotations

import random
import re
from typing import Final

from modelrouter.config import TracingSettings

# W3C Trace Context: version-traceid-parentid-flags; a later version may add fields after them.
_TRACEPARENT: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_LOW_64: Final = (1 << 64) - 1


class Parent:
    """The caller's span, from its `traceparent` header: its fields as sent (lower-case hex),
    turned into numbers only when asked (most requests only pass them on)."""

    __slots__ = ("flags", "span_hex", "trace_hex")

    def __init__(self, trace_hex: str, span_hex: str, flags: str) -> None:
        self.trace_hex = trace_hex
        self.span_hex = span_hex
        self.flags = flags

    @property
    def trace_id(self) -> int:
        return int(self.trace_hex, 16)

    @property
    def span_id(self) -> int:
        return int(self.span_hex, 16)

    @property
    def sampled(self) -> bool:
        return bool(int(self.flags, 16) & 1)


_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16


def parse_traceparent(value: str | None) -> Parent | None:
    """The caller's span, or None for a missing or invalid header (then a trace starts here)."""
    if value is None:
        return None
    found = _TRACEPARENT.fullmatch(value.strip())
    if found is None:
        return None
    version, trace_hex, span_hex, flags, rest = found.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if trace_hex == _ZERO_TRACE or span_hex == _ZERO_SPAN:
        return None
    return Parent(trace_hex, span_hex, flags)


class Sampling:
    """OTEL_TRACES_SAMPLER's decision: `always_on`, `always_off`, `traceidratio` (a ratio of
    trace ids, the caller's id when it sent one), each alone or `parentbased_` (a caller's
    sampled flag decides; the sampler decides only for the traces that start here)."""

    __slots__ = ("_bound", "_parent_based", "_ratio")

    def __init__(self, settings: TracingSettings) -> None:
        name = settings.sampler
        self._parent_based = name.startswith("parentbased_")
        root = name.removeprefix("parentbased_")
        self._ratio = {"always_on": 1.0, "always_off": 0.0}.get(root, settings.sampler_arg)
        # As the SDK's TraceIdRatioBased: the low 64 bits of the trace id below a bound.
        self._bound = round(self._ratio * (1 << 64))

    def keep(self, parent: Parent | None) -> bool:
        if parent is None:
            return random.random() < self._ratio  # noqa: S311 - sampling, not a secret
        if self._parent_based:
            return parent.sampled
        return (parent.trace_id & _LOW_64) < self._bound


def passed_on(parent: Parent) -> bytes:
    """A sampled-out request's `traceparent` line for its attempts: the caller's, as it came
    (rebuilt from the checked fields). The gateway's spans are not recorded, so the provider's
    spans hang under the caller's span; and no id is generated for spans nobody sees."""
    return f"traceparent: 00-{parent.trace_hex}-{parent.span_hex}-{parent.flags}\r\n".encode()


def traceparent_line(trace_id: int, span_id: int) -> bytes:
    """The `traceparent` header line of a recorded (sampled) attempt."""
    return b"traceparent: 00-%032x-%016x-01\r\n" % (trace_id, span_id)
