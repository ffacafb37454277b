"""OpenTelemetry traces through the gateway: an OTLP/HTTP receiver on 127.0.0.1 decodes what the
gateway exports with the official `opentelemetry-proto` messages; the mock provider records the
`traceparent` each attempt sent."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from modelrouter.config import ConfigError, describe, load_settings, secrets_of
from modelrouter.observability import tracing
from modelrouter.observability.sampling import Sampling, parse_traceparent
from tests.conftest import USER, Gateway, Mock, free_port, two_providers, wait_until

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
GROQ_MODEL = "llama-3.3-70b-versatile"
OPENROUTER_MODEL = "meta-llama/llama-3.3-70b-instruct"


class Receiver:
    """An OTLP/HTTP traces endpoint: every span it was sent, decoded."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.spans: list[Span] = []
        self.headers: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if body[:2] == b"\x1f\x8b":  # the gateway's exporter compresses with gzip
            body = gzip.decompress(body)
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        self.headers.append(dict(request.headers))
        for resource in message.resource_spans:
            for scope in resource.scope_spans:
                self.spans.extend(scope.spans)
        reply = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=reply, content_type="application/x-protobuf")

    def named(self, name: str) -> list[Span]:
        return [span for span in self.spans if span.name == name]

    async def wait_for(self, *names: str) -> None:
        """Until a span of each name has arrived (spans end just after the response is sent)."""

        async def arrived() -> bool:
            await tracing.flush()
            return all(self.named(name) for name in names)

        await wait_until(arrived, timeout=5.0)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    found = Receiver(f"http://127.0.0.1:{port}")
    app = web.Application()
    app.router.add_post("/v1/traces", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield found
    await runner.cleanup()


@pytest.fixture
def traced_gateway(mock: Mock, receiver: Receiver, gateway: Gateway) -> Gateway:
    """Start a gateway before the mock's two providers (groq's answers as `groq` says) that
    exports its spans to the receiver; `env` adds to its settings."""

    async def start(groq: str = "", **env: str) -> TestClient[Any, Any]:
        return await gateway(
            **two_providers(mock, groq=groq), OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, **env
        )

    return start


def attributes(span: Span) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in span.attributes:
        value = item.value
        kind = value.WhichOneof("value")
        if kind == "array_value":
            found[item.key] = [getattr(v, v.WhichOneof("value")) for v in value.array_value.values]
        else:
            found[item.key] = getattr(value, kind) if kind else None
    return found


def traceparent_parent(header: str) -> tuple[str, str]:
    """(trace id, parent span id) of a `traceparent` header."""
    version, trace_id, span_id, _flags = header.split("-")
    assert version == "00"
    return trace_id, span_id


async def test_fallback_is_traced_as_two_attempts_under_the_callers_span(
    mock: Mock, receiver: Receiver, traced_gateway: Gateway
) -> None:
    client = await traced_gateway(
        groq="status=500", OTEL_EXPORTER_OTLP_HEADERS="x-api-key=otlp-secret-0123456789"
    )
    response = await client.post("/chat", json=USER, headers={"traceparent": TRACEPARENT})
    assert response.status == 200, await response.text()
    await receiver.wait_for("POST /chat", f"chat {GROQ_MODEL}", f"chat {OPENROUTER_MODEL}")

    [server] = receiver.named("POST /chat")
    assert server.kind == Span.SPAN_KIND_SERVER
    assert server.trace_id.hex() == CALLER_TRACE
    assert server.parent_span_id.hex() == CALLER_SPAN
    assert attributes(server)["http.response.status_code"] == 200

    [failed] = receiver.named(f"chat {GROQ_MODEL}")
    [answered] = receiver.named(f"chat {OPENROUTER_MODEL}")
    for span in (failed, answered):
        assert span.kind == Span.SPAN_KIND_CLIENT
        assert span.trace_id.hex() == CALLER_TRACE
        assert span.parent_span_id == server.span_id
    failed_attributes = attributes(failed)
    assert failed_attributes["modelrouter.attempt.number"] == 1
    assert failed_attributes["gen_ai.operation.name"] == "chat"
    assert failed_attributes["gen_ai.provider.name"] == "groq"
    assert failed_attributes["gen_ai.request.model"] == GROQ_MODEL
    assert failed_attributes["modelrouter.deployment"] == "groq"
    assert failed_attributes["modelrouter.attempt.outcome"] == "server_error"
    assert failed.status.code == failed.status.STATUS_CODE_ERROR
    found = attributes(answered)
    assert found["gen_ai.operation.name"] == "chat"
    assert found["gen_ai.provider.name"] == "openrouter"
    assert found["gen_ai.request.model"] == OPENROUTER_MODEL
    assert found["gen_ai.response.model"] == OPENROUTER_MODEL
    assert found["modelrouter.deployment"] == "openrouter"
    assert found["modelrouter.attempt.outcome"] == "ok"
    assert found["modelrouter.attempt.number"] == 2
    assert found["gen_ai.response.finish_reasons"] == ["stop"]
    assert found["gen_ai.usage.input_tokens"] > 0
    assert found["gen_ai.usage.output_tokens"] > 0
    # The answering attempt's usage at the price table's price: what the request was billed.
    billed = float(response.headers["x-modelrouter-cost-usd"])
    assert billed > 0
    assert found["modelrouter.cost_usd"] == pytest.approx(billed)
    assert "modelrouter.cost_usd" not in failed_attributes  # no usage, no cost
    # The exporter sent the configured headers; the receiver is the only one to see them.
    assert receiver.headers[0]["x-api-key"] == "otlp-secret-0123456789"

    # Each upstream request carried its own attempt's span as parent, not the caller's.
    sent = {
        r["path"].split("/")[2] if r["path"].startswith("/x/") else "": r["headers"]["traceparent"]
        for r in await mock.received()
    }
    assert traceparent_parent(sent["status=500"]) == (CALLER_TRACE, failed.span_id.hex())
    assert traceparent_parent(sent[""]) == (CALLER_TRACE, answered.span_id.hex())


async def test_a_request_without_traceparent_starts_a_trace(
    receiver: Receiver, traced_gateway: Gateway
) -> None:
    client = await traced_gateway()
    response = await client.post("/stream", json=USER)
    assert response.status == 200
    await response.read()
    await receiver.wait_for("POST /stream", f"chat {GROQ_MODEL}")
    [server] = receiver.named("POST /stream")
    [attempt] = receiver.named(f"chat {GROQ_MODEL}")
    assert server.parent_span_id == b""
    assert attempt.parent_span_id == server.span_id
    found = attributes(attempt)
    assert found["modelrouter.attempt.outcome"] == "ok"
    assert found["modelrouter.stream"] is True


async def test_propagate_trace_false_keeps_traceparent_from_that_provider(
    mock: Mock, receiver: Receiver, traced_gateway: Gateway
) -> None:
    client = await traced_gateway(GROQ_PROPAGATE_TRACE="false")
    response = await client.post("/chat", json=USER, headers={"traceparent": TRACEPARENT})
    assert response.status == 200
    await receiver.wait_for(f"chat {GROQ_MODEL}")  # traced all the same
    [request] = await mock.received()
    assert "traceparent" not in request["headers"]


async def test_prompts_stay_out_of_spans_unless_content_capture_is_on(
    receiver: Receiver, traced_gateway: Gateway
) -> None:
    client = await traced_gateway()
    assert (await client.post("/chat", json=USER)).status == 200
    await receiver.wait_for("POST /chat", f"chat {GROQ_MODEL}")
    assert all("hello there" not in str(attributes(span)) for span in receiver.spans)
    await client.close()  # the app's cleanup stops this process's tracing

    receiver.spans.clear()
    client = await traced_gateway(OTEL_CAPTURE_CONTENT="true")
    assert (await client.post("/chat", json=USER)).status == 200
    await receiver.wait_for(f"chat {GROQ_MODEL}")
    [attempt] = receiver.named(f"chat {GROQ_MODEL}")
    assert "hello there" in attributes(attempt)["gen_ai.input.messages"]


async def test_tracing_off_opens_no_span_and_sends_no_traceparent(
    mock: Mock, gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a span was opened with tracing off")

    monkeypatch.setattr(tracing, "server_span", refuse)
    monkeypatch.setattr(tracing, "attempt_span", refuse)
    client = await gateway(**two_providers(mock))
    assert not tracing.ENABLED
    response = await client.post("/chat", json=USER, headers={"traceparent": TRACEPARENT})
    assert response.status == 200
    [request] = await mock.received()
    assert "traceparent" not in request["headers"]


async def test_probes_are_not_traced(receiver: Receiver, traced_gateway: Gateway) -> None:
    client = await traced_gateway()
    assert (await client.get("/health")).status == 200
    assert (await client.get("/v1/models")).status == 200
    await receiver.wait_for("GET /v1/models")
    assert not receiver.named("GET /health")


def test_network_policy_lets_traces_out_to_an_otlp_collector() -> None:
    import yaml

    path = Path(__file__).resolve().parent.parent / "deploy/k8s/base/networkpolicy.yaml"
    policy = yaml.safe_load(path.read_text())
    ports = [p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])]
    assert 4318 in ports  # OTLP/HTTP; 443 (a collector behind HTTPS) is there for the providers
    assert 443 in ports


async def test_a_sampled_out_request_creates_no_span_and_passes_the_callers_traceparent_on(
    mock: Mock, receiver: Receiver, traced_gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await traced_gateway(OTEL_TRACES_SAMPLER="parentbased_always_on")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the SDK was asked for a span of a request sampled out")

    assert tracing._tracing is not None
    monkeypatch.setattr(tracing._tracing.tracer, "start_span", refuse)
    not_sampled = f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"
    response = await client.post("/chat", json=USER, headers={"traceparent": not_sampled})
    assert response.status == 200
    assert await tracing.flush()
    assert receiver.spans == []
    [request] = await mock.received()
    # The gateway's spans are not recorded: the provider's hang under the caller's span, and
    # the flag tells it not to record either.
    assert request["headers"]["traceparent"] == not_sampled


async def test_a_sampled_out_request_without_traceparent_sends_none(
    mock: Mock, receiver: Receiver, traced_gateway: Gateway
) -> None:
    client = await traced_gateway(OTEL_TRACES_SAMPLER="always_off")
    assert (await client.post("/chat", json=USER)).status == 200
    assert await tracing.flush()
    assert receiver.spans == []
    [request] = await mock.received()
    assert "traceparent" not in request["headers"]


def test_traces_endpoint_is_the_base_one_with_the_signal_path_unless_given() -> None:
    base = load_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert base.tracing.endpoint == "http://collector:4318/v1/traces"
    assert base.tracing.enabled
    both = load_settings(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces.example/otlp",
        }
    )
    assert both.tracing.endpoint == "https://traces.example/otlp"
    assert not load_settings({}).tracing.enabled


def test_bad_tracing_settings_are_all_reported_at_start_up() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "grpc://collector:4317",
                "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key",
                "OTEL_TRACES_SAMPLER": "sometimes",
                "OTEL_TRACES_SAMPLER_ARG": "1.5",
                "OTEL_CAPTURE_CONTENT": "maybe",
                "GROQ_PROPAGATE_TRACE": "perhaps",
            }
        )
    problems = "\n".join(caught.value.problems)
    for name in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_TRACES_SAMPLER=",
        "OTEL_TRACES_SAMPLER_ARG",
        "OTEL_CAPTURE_CONTENT",
        "GROQ_PROPAGATE_TRACE",
    ):
        assert name in problems


def test_otlp_headers_are_masked_when_shown_and_redacted_from_logs() -> None:
    token = "otlp-token-0123456789abcdef"
    settings = load_settings(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{token},x-team=blue-team-key",
        }
    )
    assert settings.tracing.headers == (
        ("Authorization", f"Bearer {token}"),
        ("x-team", "blue-team-key"),
    )
    assert token not in json.dumps(describe(settings))
    assert "blue-team-key" not in json.dumps(describe(settings))
    assert {f"Bearer {token}", token, "blue-team-key"} <= set(secrets_of(settings))


@pytest.mark.parametrize(
    ("name", "arg", "parent", "kept"),
    [
        ("always_on", "1.0", None, True),
        ("always_off", "1.0", None, False),
        ("always_off", "1.0", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01", False),
        ("parentbased_always_off", "1.0", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01", True),
        ("parentbased_always_on", "1.0", f"00-{CALLER_TRACE}-{CALLER_SPAN}-00", False),
        ("parentbased_traceidratio", "0", None, False),
        ("parentbased_traceidratio", "1", None, True),
        ("traceidratio", "0.5", f"00-{'0' * 16}{'f' * 16}-{CALLER_SPAN}-01", False),
        ("traceidratio", "0.5", f"00-{'f' * 16}{'0' * 15}1-{CALLER_SPAN}-00", True),
    ],
)
def test_the_sampler_decides_as_its_name_says(
    name: str, arg: str, parent: str | None, kept: bool
) -> None:
    settings = load_settings({"OTEL_TRACES_SAMPLER": name, "OTEL_TRACES_SAMPLER_ARG": arg})
    assert Sampling(settings.tracing).keep(parse_traceparent(parent)) is kept


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"ff-{CALLER_TRACE}-{CALLER_SPAN}-01",  # version ff is invalid
        f"00-{'0' * 32}-{CALLER_SPAN}-01",  # all-zero trace id
        f"00-{CALLER_TRACE}-{'0' * 16}-01",
        f"00-{CALLER_TRACE}-{CALLER_SPAN}-01-extra",  # version 00 has exactly four fields
        f"00-{CALLER_TRACE.upper()}-{CALLER_SPAN}-01",  # lower-case hex only
    ],
)
def test_an_invalid_traceparent_starts_a_new_trace(header: str) -> None:
    assert parse_traceparent(header) is None


def test_a_later_traceparent_version_is_read_for_its_known_fields() -> None:
    parent = parse_traceparent(f"01-{CALLER_TRACE}-{CALLER_SPAN}-01-what-comes-next")
    assert parent is not None
    assert (parent.trace_id, parent.span_id, parent.sampled) == (
        int(CALLER_TRACE, 16),
        int(CALLER_SPAN, 16),
        True,
    )


def test_a_routing_file_deployment_can_keep_traceparent_to_itself(tmp_path: Path) -> None:
    from tests.routing.support import settings_from

    settings = settings_from(
        tmp_path,
        """
        deployments:
          - name: quiet
            kind: openai
            base_url: http://127.0.0.1:9/v1
            models: {fast: m}
            propagate_trace: false
          - name: open
            kind: openai
            base_url: http://127.0.0.1:9/v1
            models: {fast: m}
        """,
    )
    by_name = {p.name: p.propagate_trace for p in settings.providers}
    assert by_name["quiet"] is False
    assert by_name["open"] is True
