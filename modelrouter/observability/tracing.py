"""OpenTelemetry traces: a SERVER span per request, a CLIENT span per provider attempt.

Off unless an OTLP endpoint is configured (`TracingSettings.enabled`). Off, the request path
pays one read of the module flag `ENABLED` per hook (read as `tracing.ENABLED`, never imported
by name: `start` and `stop` change it) and nothing else: no span objects, no context lookups.

On, the front middleware opens the request's server span as a child of the caller's
`traceparent` and makes it current, so the routing task (which copies the request's context
when it is created) opens each attempt's span under it. An attempt's span context goes upstream
as `traceparent` (unless its provider says not to), so the provider's spans are children of the
attempt, not siblings of it. Spans are exported in batches by the SDK's worker thread, off the
event loop; a full queue drops spans rather than wait.

Prompts are put in spans only with `capture_content` (OTEL_CAPTURE_CONTENT=true); answers never.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Final

import msgspec
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from modelrouter import __version__
from modelrouter.config import TracingSettings
from modelrouter.events import Usage
from modelrouter.observability.sampling import (
    Sampling,
    parse_traceparent,
    passed_on,
    traceparent_line,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

ENABLED = False  # the one flag the request path reads (set by `start`, cleared by `stop`)
# The request's trace, set by the front for the request's task and copied by its routing task:
# its recording server span, or for a request sampled out (nothing recorded) that came with a
# `traceparent`, the line its attempts pass on. Unset: nothing to record, no header to send.
_CURRENT: ContextVar[trace.Span | bytes | None] = ContextVar("modelrouter_trace", default=None)
SCOPE: Final = "modelrouter"
_PROPAGATOR: Final = TraceContextTextMapPropagator()
# An attempt that ended by an exception: its outcome by the exception's type name (this layer
# imports nothing of the actors').
_RAISED: Final = {
    "CancelledError": "cancelled",
    "ClientGone": "client_gone",
    "PoolFull": "saturated",
}


class _Tracing:
    __slots__ = ("capture", "provider", "sampling", "tracer")

    def __init__(self, provider: TracerProvider, settings: TracingSettings) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer(SCOPE, __version__)
        self.sampling = Sampling(settings)
        self.capture = settings.capture_content


_tracing: _Tracing | None = None


def start(settings: TracingSettings, *, exporter: SpanExporter | None = None) -> None:
    """Start exporting to `settings.endpoint` (or to `exporter`), batched as the settings say
    (`OTEL_BSP_*`). One tracing per process: the flag is the process's."""
    global _tracing, ENABLED  # noqa: PLW0603 - the process's one tracing, read on the hot path
    # The SDK and the exporter (requests, protobuf) load only when tracing is on.
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON  # noqa: PLC0415

    if _tracing is not None:
        raise RuntimeError("tracing is already started in this process")
    if exporter is None:
        exporter = _otlp_exporter(settings)
    resource = Resource({"service.name": settings.service_name, "service.version": __version__})
    # The decision is taken before the SDK is called (`Sampling`): what it is given, it keeps.
    provider = TracerProvider(sampler=ALWAYS_ON, resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(batch_processor(settings, exporter))
    _tracing = _Tracing(provider, settings)
    ENABLED = True


def batch_processor(settings: TracingSettings, exporter: SpanExporter) -> BatchSpanProcessor:
    """The SDK's batch processor with the settings' OTEL_BSP_* values: at most
    `max_queue_size` ended spans wait (then new ones are dropped), sent
    `max_export_batch_size` at a time when that many wait, else every `schedule_delay_ms`."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    return BatchSpanProcessor(
        exporter,
        max_queue_size=settings.max_queue_size,
        max_export_batch_size=settings.max_export_batch_size,
        schedule_delay_millis=settings.schedule_delay_ms,
        # The SDK's processor keeps this without using it: the exporter applies it (below).
        export_timeout_millis=settings.export_timeout_ms,
    )


def _otlp_exporter(settings: TracingSettings) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http import Compression  # noqa: PLC0415
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    from modelrouter.observability.otlp_session import EnvironmentReadOnce  # noqa: PLC0415

    assert settings.endpoint is not None
    return OTLPSpanExporter(
        endpoint=settings.endpoint,
        headers=dict(settings.headers),
        timeout=settings.export_timeout_ms / 1000,  # one export, its retries included
        compression=Compression.Gzip,
        session=EnvironmentReadOnce(settings.endpoint),
    )


async def flush(*, timeout: float = 5.0) -> bool:
    """Export every ended span now (in a thread: the exporter blocks); False if not in time."""
    tracing = _tracing
    if tracing is None:
        return True
    millis = int(timeout * 1000)
    return await asyncio.to_thread(tracing.provider.force_flush, millis)


async def stop() -> None:
    """Stop tracing: no new spans, the ended ones exported (in a thread, bounded by the
    exporter's timeout)."""
    global _tracing, ENABLED
    tracing, _tracing, ENABLED = _tracing, None, False
    if tracing is not None:
        await asyncio.to_thread(tracing.provider.shutdown)


def lifetime(settings: TracingSettings) -> Callable[[object], AsyncIterator[None]]:
    """A `cleanup_ctx` for the app: tracing for the app's lifetime."""

    async def tracing_ctx(_: object) -> AsyncIterator[None]:
        start(settings)
        try:
            yield
        finally:
            await stop()

    return tracing_ctx


# -- the request's span ------------------------------------------------------------------------
class ServerSpan:
    __slots__ = ("span", "token")

    def __init__(self, span: trace.Span | None, token: Token[trace.Span | bytes | None]) -> None:
        self.span = span  # None: sampled out
        self.token = token

    def end(self, status: int) -> None:
        """End the span with the response's status; the request's trace is no longer current
        (called in the task that opened it)."""
        _CURRENT.reset(self.token)
        span = self.span
        if span is not None:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(trace.StatusCode.ERROR)
            span.end()


def server_span(
    headers: Mapping[str, str], *, method: str, route: str, request_id: str
) -> ServerSpan | None:
    """Open the request's span, a child of the caller's `traceparent` when it sent one, and
    make it the request's trace (the routing task copies it). A request sampled out gets no
    span; if it came with a `traceparent`, its attempts pass that on (None: nothing to end).
    Only when `ENABLED`."""
    tracing = _tracing
    assert tracing is not None
    header = headers.get("traceparent")
    parent = parse_traceparent(header) if header is not None else None
    if not tracing.sampling.keep(parent):
        return None if parent is None else ServerSpan(None, _CURRENT.set(passed_on(parent)))
    context = _PROPAGATOR.extract(headers) if parent is not None else None  # with tracestate
    attributes = {
        "http.request.method": method,
        "http.route": route,
        "modelrouter.request_id": request_id,
    }
    span = tracing.tracer.start_span(
        f"{method} {route}", context, trace.SpanKind.SERVER, attributes
    )
    return ServerSpan(span, _CURRENT.set(span))


# -- an attempt's span -------------------------------------------------------------------------
class AttemptSpan:
    __slots__ = ("span", "traceparent")

    def __init__(self, span: trace.Span, traceparent: bytes) -> None:
        self.span = span
        self.traceparent = traceparent  # the header line for the upstream request, or b""

    def end(
        self,
        *,
        ok: bool,
        reason: str | None,
        finish_reason: str | None,
        usage: Usage | None,
        cost_usd: float | None = None,
    ) -> None:
        """End with the attempt's result: `ok`, or its failure `reason` (None: the upstream
        rejected the request itself); `cost_usd`: its usage at the price table's price."""
        span = self.span
        outcome = "ok" if ok else reason or "invalid_request"
        found: dict[str, str | int | float | tuple[str, ...]] = {
            "modelrouter.attempt.outcome": outcome
        }
        if usage is not None:
            found["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            found["gen_ai.usage.output_tokens"] = usage.completion_tokens
        if cost_usd is not None:
            found["modelrouter.cost_usd"] = cost_usd
        if finish_reason is not None:
            found["gen_ai.response.finish_reasons"] = (finish_reason,)
        if not ok:
            found["error.type"] = outcome
            span.set_status(trace.StatusCode.ERROR)
        span.set_attributes(found)
        span.end()

    def abandon(self, exc: BaseException) -> None:
        """End an attempt that raised (cancelled, the client gone, a crash)."""
        span = self.span
        outcome = _RAISED.get(type(exc).__name__, "error")
        span.set_attribute("modelrouter.attempt.outcome", outcome)
        span.set_attribute("error.type", type(exc).__name__)
        span.set_status(trace.StatusCode.ERROR)
        span.end()


def unrecorded(*, propagate: bool) -> bytes | None:
    """For an attempt of a request that is not recorded, the `traceparent` line it sends
    (b"": none); None when the request is recorded: then open its span (`attempt_span`).
    Only when `ENABLED`; the cheap question asked first, so sampled-out attempts pay little."""
    current = _CURRENT.get()
    if current is None:
        return b""
    if type(current) is bytes:
        return current if propagate else b""
    return None


def attempt_span(
    *,
    provider: str,
    deployment: str,
    model: str,
    number: int,
    stream: bool,
    propagate: bool,
    messages: object,
) -> AttemptSpan:
    """Open an attempt's CLIENT span under the request's recorded span (`unrecorded` said
    None). `messages` go into the span only with content capture on."""
    tracing = _tracing
    assert tracing is not None
    current = _CURRENT.get()
    assert isinstance(current, trace.Span)
    attributes: dict[str, str | int | bool] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        # The adapters do not read the model an upstream names in its answer.
        "gen_ai.response.model": model,
        "modelrouter.deployment": deployment,
        "modelrouter.attempt.number": number,
        "modelrouter.stream": stream,
    }
    if tracing.capture:
        attributes["gen_ai.input.messages"] = msgspec.json.encode(messages).decode()
    span = tracing.tracer.start_span(
        f"chat {model}", trace.set_span_in_context(current), trace.SpanKind.CLIENT, attributes
    )
    header = b""
    if propagate:
        ctx = span.get_span_context()
        header = traceparent_line(ctx.trace_id, ctx.span_id)
    return AttemptSpan(span, header)
