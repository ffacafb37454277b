"""Azure OpenAI and Gemini deployments behind a live gateway, against the mock's flavours, with
the official `openai` package as the client: plain, streamed, tools, errors, usage.

No environment variable sets a provider's kind yet (the routing file will), so the gateway here
is built from settings whose providers are set directly.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import openai
import pytest
from aiohttp.test_utils import TestClient

from modelrouter.actors.upstream import MAX_HEADS, Upstream
from modelrouter.config import ProviderSettings, load_settings
from modelrouter.mock.gemini import SIGNATURE
from modelrouter.providers import build_adapter
from modelrouter.redact import Redactor
from modelrouter.transport import Pool
from modelrouter.web import create_app
from tests.conftest import CLIENT_KEY, Mock
from tests.test_openai_sdk import MESSAGES, MOCK_TEXT, WEATHER_TOOL

AZURE_KEY = "azure-test-secret-key-0001"
GEMINI_KEY = "AIza-test-secret-gemini-key"
Start = Callable[..., Awaitable[TestClient[Any, Any]]]


def deployment(mock: Mock, kind: str, spec: str = "", **extra: Any) -> ProviderSettings:
    base = f"{mock.url}/x/{spec}" if spec else mock.url
    key = AZURE_KEY if kind == "azure" else GEMINI_KEY
    model = "gpt-4o-prod" if kind == "azure" else "gemini-2.5-flash"
    return ProviderSettings(
        name=kind,
        kind=kind,  # type: ignore[arg-type]
        base_url=base,
        model=model,
        api_key=key,
        rate_limit=0,
        **extra,
    )


@pytest.fixture
def start(aiohttp_client: Any) -> Start:
    async def start(*providers: ProviderSettings) -> TestClient[Any, Any]:
        settings = load_settings({"API_KEY": CLIENT_KEY, "BACKOFF_BASE_SECONDS": "5"})
        settings = msgspec.structs.replace(settings, providers=providers, skipped_providers=())
        client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
        return client

    return start


def sdk(client: TestClient[Any, Any]) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=str(client.make_url("/v1")), api_key=CLIENT_KEY, max_retries=0
    )


KINDS = ["azure", "gemini"]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_plain_completion_comes_back_with_its_usage(
    start: Start, mock: Mock, kind: str
) -> None:
    client = await start(deployment(mock, kind))
    completion = await sdk(client).chat.completions.create(model="auto", messages=MESSAGES)
    assert completion.choices[0].message.content == MOCK_TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 8
    assert completion.usage.prompt_tokens == 4  # "be brief" + "hello there", in words
    assert (completion.model_extra or {})["provider"] == kind


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stream_comes_back_whole_with_its_usage(
    start: Start, mock: Mock, kind: str
) -> None:
    client = await start(deployment(mock, kind))
    stream = await sdk(client).chat.completions.create(
        model="auto", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == MOCK_TEXT
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 8


async def test_azure_is_asked_on_the_deployment_path_with_its_key_header(
    start: Start, mock: Mock
) -> None:
    client = await start(deployment(mock, "azure"))
    await sdk(client).chat.completions.create(model="auto", messages=MESSAGES, stream=True)
    sent = (await mock.received())[-1]
    assert sent["path"] == "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
    assert sent["headers"]["api-key"] == AZURE_KEY
    assert "Authorization" not in sent["headers"]


async def test_azure_v1_is_asked_on_the_v1_path_with_the_deployment_as_model(
    start: Start, mock: Mock
) -> None:
    client = await start(deployment(mock, "azure", api_version="v1"))
    completion = await sdk(client).chat.completions.create(model="auto", messages=MESSAGES)
    assert completion.choices[0].message.content == MOCK_TEXT
    sent = (await mock.received())[-1]
    assert sent["path"] == "/openai/v1/chat/completions"
    assert sent["body"]["model"] == "gpt-4o-prod"


@pytest.mark.parametrize(("stream", "method"), [(False, ":generateContent"), (True, ":stream")])
async def test_gemini_is_asked_on_the_model_s_method_with_its_key_header(
    start: Start, mock: Mock, stream: bool, method: str
) -> None:
    client = await start(deployment(mock, "gemini"))
    await sdk(client).chat.completions.create(model="auto", messages=MESSAGES, stream=stream)
    sent = (await mock.received())[-1]
    assert sent["path"].startswith("/v1beta/models/gemini-2.5-flash" + method)
    assert sent["path"].endswith("?alt=sse") is stream
    assert sent["headers"]["x-goog-api-key"] == GEMINI_KEY
    assert sent["body"]["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert sent["body"]["contents"] == [{"role": "user", "parts": [{"text": "hello there"}]}]


async def call_tool(api: openai.AsyncOpenAI, *, stream: bool) -> tuple[str, str, str, str]:
    """Ask for a tool call: its id, name, arguments and the finish reason, as a client sees them."""
    if not stream:
        completion = await api.chat.completions.create(
            model="auto", messages=MESSAGES, tools=[WEATHER_TOOL]
        )
        (call,) = completion.choices[0].message.tool_calls or []
        assert call.type == "function"
        finish = completion.choices[0].finish_reason
        return call.id, call.function.name, call.function.arguments, finish
    chunks = [
        chunk
        async for chunk in await api.chat.completions.create(
            model="auto", messages=MESSAGES, tools=[WEATHER_TOOL], stream=True
        )
    ]
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert {d.index for d in deltas} == {0}
    name = next(d.function.name for d in deltas if d.function and d.function.name)
    arguments = "".join(d.function.arguments or "" for d in deltas if d.function)
    finish = next(c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason)
    return str(deltas[0].id), name, arguments, finish


def answered(call_id: str, name: str, arguments: str) -> list[Any]:
    """The conversation sent back with the call's result, as OpenAI clients send it."""
    function = {"name": name, "arguments": arguments}
    call = {"id": call_id, "type": "function", "function": function}
    return [
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": "sunny"},
    ]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stream", [False, True])
async def test_a_tool_call_comes_back_whole_or_streamed(
    start: Start, mock: Mock, kind: str, stream: bool
) -> None:
    client = await start(deployment(mock, kind, "tool_call=1"))
    _, name, arguments, finish = await call_tool(sdk(client), stream=stream)
    assert (name, json.loads(arguments), finish) == ("get_weather", {"city": "Paris"}, "tool_calls")
    sent = (await mock.received())[-1]["body"]
    if kind == "gemini":
        declaration = sent["tools"][0]["functionDeclarations"][0]
        assert declaration["parametersJsonSchema"] == WEATHER_TOOL["function"]["parameters"]


async def test_an_azure_tool_result_goes_up_in_openai_s_shape(start: Start, mock: Mock) -> None:
    client = await start(deployment(mock, "azure", "tool_call=1"))
    api = sdk(client)
    call_id, name, arguments, _ = await call_tool(api, stream=False)
    await api.chat.completions.create(model="auto", messages=answered(call_id, name, arguments))
    sent = (await mock.received())[-1]["body"]["messages"]
    assert sent[3] == {"role": "tool", "content": "sunny", "tool_call_id": call_id}


@pytest.mark.parametrize("stream", [False, True])
async def test_gemini_gets_its_thought_signature_back_with_the_call_it_signed(
    start: Start, mock: Mock, stream: bool
) -> None:
    client = await start(deployment(mock, "gemini", "tool_call=1"))
    api = sdk(client)
    call_id, name, arguments, _ = await call_tool(api, stream=stream)
    await api.chat.completions.create(model="auto", messages=answered(call_id, name, arguments))
    call_turn, result_turn = (await mock.received())[-1]["body"]["contents"][1:]
    call = {"name": "get_weather", "args": {"city": "Paris"}}
    assert call_turn == {
        "role": "model",
        "parts": [{"functionCall": call, "thoughtSignature": SIGNATURE}],  # as Gemini wrote it
    }
    response = {"name": "get_weather", "response": {"output": "sunny"}}
    assert result_turn == {"role": "user", "parts": [{"functionResponse": response}]}


async def test_a_failing_gemini_falls_over_to_azure(start: Start, mock: Mock) -> None:
    client = await start(deployment(mock, "gemini", "status=503"), deployment(mock, "azure"))
    completion = await sdk(client).chat.completions.create(model="auto", messages=MESSAGES)
    assert completion.choices[0].message.content == MOCK_TEXT
    assert (completion.model_extra or {})["provider"] == "azure"


async def test_an_azure_resource_without_the_deployment_falls_over_and_stays_healthy(
    start: Start, mock: Mock
) -> None:
    client = await start(deployment(mock, "azure", "status=404"), deployment(mock, "gemini"))
    completion = await sdk(client).chat.completions.create(model="auto", messages=MESSAGES)
    assert (completion.model_extra or {})["provider"] == "gemini"
    health = await (await client.get("/health")).json()
    assert health["providers"]["azure"]["state"] == "ok"


@pytest.mark.parametrize("kind", KINDS)
async def test_an_error_inside_the_stream_cuts_it_as_an_error(
    start: Start, mock: Mock, kind: str
) -> None:
    client = await start(deployment(mock, kind, "stream_error_after=2"))
    stream = await sdk(client).chat.completions.create(model="auto", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stream_without_its_end_is_not_taken_for_a_whole_answer(
    start: Start, mock: Mock, kind: str
) -> None:
    client = await start(deployment(mock, kind, "no_done=1"))
    stream = await sdk(client).chat.completions.create(model="auto", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass


@pytest.mark.parametrize("kind", KINDS)
async def test_a_rejected_key_is_never_shown_to_the_client(
    start: Start, mock: Mock, kind: str
) -> None:
    client = await start(deployment(mock, kind, "status=401,echo_auth=1"))
    with pytest.raises(openai.APIStatusError) as caught:
        await sdk(client).chat.completions.create(model="auto", messages=MESSAGES)
    text = caught.value.response.text
    assert AZURE_KEY not in text
    assert GEMINI_KEY not in text


def upstream_of(kind: str) -> Upstream:
    settings = ProviderSettings(
        name=kind,
        kind=kind,  # type: ignore[arg-type]
        base_url="http://upstream.test:8080",
        model="configured",
        api_key="k",
        rate_limit=0,
    )
    adapter = build_adapter(settings)
    return Upstream(adapter, Pool(adapter.url), Redactor([]))


def request_line(head: bytes) -> bytes:
    return head.split(b"\r\n", 1)[0]


def test_only_adapters_whose_path_names_the_model_need_a_head_per_model() -> None:
    assert not upstream_of("openai").adapter.model_in_path
    assert upstream_of("gemini").adapter.model_in_path


def test_the_request_line_names_the_model_and_method_where_the_path_holds_them() -> None:
    upstream = upstream_of("gemini")
    assert request_line(upstream.head_for("gemini-2.5-pro", True)) == (
        b"POST /v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse HTTP/1.1"
    )
    assert request_line(upstream.head_for("gemini-2.5-pro", False)) == (
        b"POST /v1beta/models/gemini-2.5-pro:generateContent HTTP/1.1"
    )
    assert b"x-goog-api-key: k\r\n" in upstream.head_for("m", True)


def test_request_heads_kept_per_model_are_bounded() -> None:
    upstream = upstream_of("azure")
    for number in range(MAX_HEADS * 2):
        head = upstream.head_for(f"deployment-{number}", True)
        assert request_line(head).startswith(
            f"POST /openai/deployments/deployment-{number}/".encode()
        )
    assert len(upstream._heads) == MAX_HEADS
