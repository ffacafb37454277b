"""The mock LLM provider: flavours, faults, counters, CLI flags."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from modelrouter.bench.procs import free_port
from modelrouter.mock import (
    Faults,
    add_mock_arguments,
    create_mock_app,
    faults_from_args,
    parse_spec,
    start_mock,
)
from modelrouter.mock.text import REPLY_TOKENS, echo_tokens, reply_tokens

Client = TestClient[Any, Any]
ClientFactory = Callable[..., Awaitable[Client]]

OPENAI = "/v1/chat/completions"
OLLAMA = "/api/chat"
ANTHROPIC = "/v1/messages"
DEFAULT_TEXT = "".join(REPLY_TOKENS[:8])
REPO = Path(__file__).resolve().parent.parent


def chat(content: str = "what is the weather like", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "gpt-test", "messages": [{"role": "user", "content": content}]}
    body.update(extra)
    return body


@pytest.fixture
async def client(aiohttp_client: ClientFactory) -> Client:
    return await aiohttp_client(create_mock_app())


# ---------- stream readers ----------


async def sse_data(resp: aiohttp.ClientResponse) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    text = (await resp.read()).decode()
    return [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]


async def anthropic_events(resp: aiohttp.ClientResponse) -> list[tuple[str, dict[str, Any]]]:
    text = (await resp.read()).decode()
    events = []
    for block in text.split("\n\n"):
        if block.strip():
            name_line, data_line = block.split("\n")
            assert name_line.startswith("event: ")
            events.append((name_line[len("event: ") :], json.loads(data_line[len("data: ") :])))
    return events


async def ndjson(resp: aiohttp.ClientResponse) -> list[dict[str, Any]]:
    text = (await resp.read()).decode()
    return [json.loads(line) for line in text.split("\n") if line]


def openai_text(chunks: list[str]) -> str:
    parsed = [json.loads(chunk) for chunk in chunks if chunk != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in parsed if c["choices"])


async def streamed_text(path: str, resp: aiohttp.ClientResponse) -> str:
    """The reply text of a stream of any flavour, joined from its token events."""
    if path.endswith(OLLAMA):
        return "".join(line["message"]["content"] for line in await ndjson(resp))
    if path.endswith(ANTHROPIC):
        events = await anthropic_events(resp)
        return "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    return openai_text(await sse_data(resp))


def complete_text(path: str, body: dict[str, Any]) -> str:
    if path.endswith(OLLAMA):
        return str(body["message"]["content"])
    if path.endswith(ANTHROPIC):
        return str(body["content"][0]["text"])
    return str(body["choices"][0]["message"]["content"])


async def stats(client: Client) -> dict[str, Any]:
    resp = await client.get("/_mock/stats")
    result: dict[str, Any] = await resp.json()
    return result


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` for up to ~10 s (a hang guard for asynchronous effects, not a timing test)."""
    for _ in range(200):
        if await check():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


async def wait_for_open_streams(client: Client, expected: int) -> None:
    async def reached() -> bool:
        return bool((await stats(client))["open_streams"] == expected)

    await eventually(reached, f"open_streams == {expected}")


async def wait_for_requests(client: Client, prefix: str, count: int) -> None:
    async def reached() -> bool:
        return bool((await stats(client))["requests"].get(prefix) == count)

    await eventually(reached, f"{count} request(s) on {prefix!r}")


async def read_until_error(resp: aiohttp.ClientResponse) -> tuple[bytes, BaseException | None]:
    """Everything the response delivered, and the error that cut it short (if any)."""
    received = b""
    try:
        async for data in resp.content.iter_any():
            received += data
    except aiohttp.ClientError as exc:
        return received, exc
    return received, None


# ---------- deterministic text ----------


def test_reply_tokens_hold_exactly_one_newline_and_cycle() -> None:
    assert "".join(REPLY_TOKENS).count("\n") == 1
    assert reply_tokens(3) == ["Hello", " from", " the"]
    long = reply_tokens(len(REPLY_TOKENS) + 2)
    assert long[len(REPLY_TOKENS) :] == [" Hello", " from"]
    assert reply_tokens(0) == []


def test_echo_tokens_join_back_to_the_text() -> None:
    for text in ["hello big  world", "  leading", "trailing  ", "", "   ", "a\nb"]:
        assert "".join(echo_tokens(text)) == text
    assert echo_tokens("hello big world") == ["hello", " big", " world"]


# ---------- every flavour ----------


@pytest.mark.parametrize("path", [OPENAI, OLLAMA, ANTHROPIC])
@pytest.mark.parametrize("tokens", [1, 8, 30])
async def test_streamed_tokens_concatenate_to_the_non_stream_text(
    client: Client, path: str, tokens: int
) -> None:
    url = f"/x/tokens={tokens}{path}"
    plain = complete_text(path, await (await client.post(url, json=chat(stream=False))).json())
    streamed = await streamed_text(path, await client.post(url, json=chat(stream=True)))
    assert streamed == plain == "".join(reply_tokens(tokens))
    if tokens == 8:
        assert plain.count("\n") == 1


@pytest.mark.parametrize("path", [OPENAI, OLLAMA, ANTHROPIC])
async def test_model_is_echoed_and_defaults_to_mock_model(client: Client, path: str) -> None:
    body = await (await client.post(path, json=chat(model="my-model", stream=False))).json()
    assert body["model"] == "my-model"
    del_model = {"messages": [{"role": "user", "content": "x"}], "stream": False}
    assert (await (await client.post(path, json=del_model)).json())["model"] == "mock-model"


# ---------- OpenAI flavour ----------


async def test_openai_non_stream_returns_completion_with_usage(client: Client) -> None:
    resp = await client.post(OPENAI, json=chat("one two three"))
    assert resp.status == 200
    body = await resp.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-test"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": DEFAULT_TEXT}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}


async def test_openai_stream_concatenates_to_non_stream_text(client: Client) -> None:
    plain = await (await client.post(OPENAI, json=chat())).json()
    resp = await client.post(OPENAI, json=chat(stream=True))
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    chunks = await sse_data(resp)
    assert chunks[-1] == "[DONE]"
    final = json.loads(chunks[-2])
    assert final["choices"][0]["finish_reason"] == "stop"
    assert all(json.loads(c)["object"] == "chat.completion.chunk" for c in chunks[:-1])
    assert all("usage" not in json.loads(c) for c in chunks[:-1])
    assert openai_text(chunks) == plain["choices"][0]["message"]["content"] == DEFAULT_TEXT


async def test_openai_stream_sends_usage_chunk_when_asked(client: Client) -> None:
    body = chat("a b", stream=True, stream_options={"include_usage": True})
    chunks = await sse_data(await client.post(OPENAI, json=body))
    usage = json.loads(chunks[-2])
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 2, "completion_tokens": 8, "total_tokens": 10}
    assert json.loads(chunks[-3])["choices"][0]["finish_reason"] == "stop"


async def test_models_listings_name_the_mock_model(client: Client) -> None:
    models = await (await client.get("/v1/models")).json()
    assert models["object"] == "list"
    assert models["data"][0]["id"] == "mock-model"
    assert models["data"][0]["object"] == "model"
    tags = await (await client.get("/api/tags")).json()
    assert tags["models"][0]["name"] == tags["models"][0]["model"] == "mock-model"


async def test_prompt_tokens_count_words_of_all_messages(client: Client) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "three more words"}]},
        {"role": "assistant", "content": None},
    ]
    body = {"model": "m", "messages": messages}
    usage = (await (await client.post(OPENAI, json=body)).json())["usage"]
    assert usage["prompt_tokens"] == 5
    empty = {"model": "m", "messages": [{"role": "user", "content": ""}]}
    assert (await (await client.post(OPENAI, json=empty)).json())["usage"]["prompt_tokens"] == 1


# ---------- Ollama flavour ----------


async def test_ollama_non_stream_returns_done_message_with_counts(client: Client) -> None:
    body = await (await client.post(OLLAMA, json=chat("x y", stream=False))).json()
    assert body["model"] == "gpt-test"
    assert body["message"] == {"role": "assistant", "content": DEFAULT_TEXT}
    assert body["done"] is True
    assert body["done_reason"] == "stop"
    assert (body["prompt_eval_count"], body["eval_count"]) == (2, 8)
    assert "created_at" in body


async def test_ollama_streams_ndjson_by_default(client: Client) -> None:
    resp = await client.post(OLLAMA, json=chat("x y"))
    assert resp.headers["Content-Type"].startswith("application/x-ndjson")
    lines = await ndjson(resp)
    assert all(line["done"] is False for line in lines[:-1])
    final = lines[-1]
    assert final["done"] is True
    assert final["done_reason"] == "stop"
    assert final["message"] == {"role": "assistant", "content": ""}
    assert (final["prompt_eval_count"], final["eval_count"]) == (2, 8)
    assert "".join(line["message"]["content"] for line in lines) == DEFAULT_TEXT


# ---------- Anthropic flavour ----------


async def test_anthropic_non_stream_returns_message(client: Client) -> None:
    body = await (await client.post(ANTHROPIC, json=chat("a b c", system="sys prompt"))).json()
    assert body["type"] == "message"
    assert body["role"] == "assistant"
    assert body["model"] == "gpt-test"
    assert body["content"] == [{"type": "text", "text": DEFAULT_TEXT}]
    assert body["stop_reason"] == "end_turn"
    assert body["usage"] == {"input_tokens": 5, "output_tokens": 8}


async def test_anthropic_stream_emits_the_event_sequence(client: Client) -> None:
    events = await anthropic_events(await client.post(ANTHROPIC, json=chat(stream=True)))
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 8,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(name == data["type"] for name, data in events)
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert all(d["type"] == "text_delta" for d in deltas)
    assert "".join(d["text"] for d in deltas) == DEFAULT_TEXT
    message_delta = events[-2][1]
    assert message_delta["delta"]["stop_reason"] == "end_turn"
    assert message_delta["usage"]["output_tokens"] == 8
    assert events[0][1]["message"]["model"] == "gpt-test"


# ---------- status / retry_after / echo_auth ----------


async def test_status_fault_uses_each_flavours_error_body(client: Client) -> None:
    resp = await client.post("/x/status=500/v1/chat/completions", json=chat())
    assert resp.status == 500
    error = (await resp.json())["error"]
    assert set(error) == {"message", "type", "code"}
    assert error["type"] == "server_error"

    resp = await client.post("/x/status=404/api/chat", json=chat())
    assert resp.status == 404
    assert isinstance((await resp.json())["error"], str)

    resp = await client.post("/x/status=529/v1/messages", json=chat())
    assert resp.status == 529
    assert await resp.json() == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "mock error 529"},
    }


async def test_status_fault_applies_to_prefixed_path_only(client: Client) -> None:
    assert (await client.post("/x/status=503/v1/chat/completions", json=chat())).status == 503
    assert (await client.post(OPENAI, json=chat())).status == 200
    assert (await client.get("/x/status=503/v1/models")).status == 503
    assert (await client.get("/x/status=503/api/tags")).status == 503
    assert (await client.get("/v1/models")).status == 200


async def test_retry_after_header_is_sent_verbatim(client: Client) -> None:
    resp = await client.post("/x/status=429,retry_after=7/v1/chat/completions", json=chat())
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "7"
    assert (await resp.json())["error"]["type"] == "rate_limit_error"


async def test_retry_after_accepts_an_http_date_with_encoded_comma(client: Client) -> None:
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    spec = "status=503,retry_after=Wed%2C%2021%20Oct%202015%2007%3A28%3A00%20GMT"
    url = client.make_url("/").join(URL(f"/x/{spec}/api/chat", encoded=True))
    resp = await client.session.post(url, json=chat())
    assert resp.status == 503
    assert resp.headers["Retry-After"] == date
    # yarl turns %2C back into "," in paths; the mock still reads the date whole.
    resp = await client.post("/x/status=503,retry_after=Wed%2C%2021%20Oct%202015/api/chat")
    assert resp.headers["Retry-After"] == "Wed, 21 Oct 2015"


async def test_echo_auth_quotes_received_credentials_in_errors(client: Client) -> None:
    headers = {"Authorization": "Bearer sk-live-123"}
    resp = await client.post(
        "/x/status=401,echo_auth=1/v1/chat/completions", json=chat(), headers=headers
    )
    assert "Bearer sk-live-123" in (await resp.json())["error"]["message"]
    resp = await client.post(
        "/x/status=401,echo_auth=1/v1/messages", json=chat(), headers={"x-api-key": "sk-ant-9"}
    )
    assert "sk-ant-9" in (await resp.json())["error"]["message"]
    resp = await client.post("/x/status=401/v1/messages", json=chat(), headers={"x-api-key": "k"})
    assert "k" not in (await resp.json())["error"]["message"].split()


async def test_echo_auth_quotes_credentials_in_stream_errors(client: Client) -> None:
    resp = await client.post(
        "/x/stream_error_after=1,echo_auth=1/api/chat",
        json=chat(),
        headers={"Authorization": "Bearer sk-stream"},
    )
    assert "Bearer sk-stream" in (await ndjson(resp))[-1]["error"]


async def test_cli_defaults_apply_to_plain_paths_and_prefix_overrides_them(
    aiohttp_client: ClientFactory,
) -> None:
    client = await aiohttp_client(create_mock_app(Faults(status=503, retry_after="2")))
    resp = await client.post(OPENAI, json=chat())
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "2"
    assert (await client.post("/x/status=none/v1/chat/completions", json=chat())).status == 200


# ---------- delays and token count ----------


@pytest.mark.parametrize("path", [OPENAI, OLLAMA, ANTHROPIC])
async def test_first_and_token_delays_still_deliver_the_full_reply(
    client: Client, path: str
) -> None:
    prefix = "/x/first_delay=0.05,token_delay=0.01,tokens=3"
    resp = await client.post(prefix + path, json=chat(stream=True))
    assert resp.status == 200
    assert await streamed_text(path, resp) == "Hello from the"
    body = await (await client.post(prefix + path, json=chat(stream=False))).json()
    assert complete_text(path, body) == "Hello from the"


async def test_first_delay_applies_before_a_status_error(client: Client) -> None:
    resp = await client.post("/x/first_delay=0.05,status=502/api/chat", json=chat())
    assert resp.status == 502


async def test_tokens_fault_sets_the_reply_length(client: Client) -> None:
    body = await (await client.post("/x/tokens=3/v1/chat/completions", json=chat())).json()
    assert body["choices"][0]["message"]["content"] == "Hello from the"
    assert body["usage"]["completion_tokens"] == 3
    chunks = await sse_data(
        await client.post("/x/tokens=20/v1/chat/completions", json=chat(stream=True))
    )
    assert openai_text(chunks) == "".join(reply_tokens(20))
    body = await (await client.post("/x/tokens=0/api/chat", json=chat(stream=False))).json()
    assert body["message"]["content"] == ""
    assert body["eval_count"] == 0


# ---------- stall ----------


async def test_stream_stalls_after_n_tokens_until_the_client_leaves(client: Client) -> None:
    resp = await client.post("/x/stall_after=2/api/chat", json=chat())
    first = [json.loads(await resp.content.readline()) for _ in range(2)]
    assert [line["message"]["content"] for line in first] == ["Hello", " from"]
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(resp.content.readline(), 0.3)
    assert (await stats(client))["open_streams"] == 1
    resp.close()
    await wait_for_open_streams(client, 0)


async def test_stall_is_released_by_client_disconnect_under_start_mock() -> None:
    runner, port = await start_mock(port=0)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            resp = await session.post(
                "/x/stall_after=1/v1/chat/completions", json=chat(stream=True)
            )
            await resp.content.readline()
            resp.close()
            for _ in range(200):
                body = await (await session.get("/_mock/stats")).json()
                if body["open_streams"] == 0:
                    break
                await asyncio.sleep(0.05)
            assert body["open_streams"] == 0
    finally:
        await runner.cleanup()


async def test_server_shutdown_ends_a_stalled_stream() -> None:
    runner, port = await start_mock(port=0)
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/x/stall_after=1/v1/messages"
        resp = await session.post(url, json=chat(stream=True))
        await resp.content.readline()
        await asyncio.wait_for(runner.cleanup(), 10)  # a hang guard, not a timing check
        with pytest.raises(aiohttp.ClientError):
            await resp.read()  # the unfinished stream is dropped, never completed


async def test_server_shutdown_cuts_a_long_first_delay_short() -> None:
    runner, port = await start_mock(port=0)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
        url = "/x/first_delay=600/v1/chat/completions"
        request = asyncio.ensure_future(session.post(url, json=chat()))

        async def arrived() -> bool:
            return bool((await (await session.get("/_mock/stats")).json())["requests"])

        await eventually(arrived, "the delayed request to reach the mock")
        await asyncio.wait_for(runner.cleanup(), 10)  # a hang guard, not a timing check
        resp = await request
        assert resp.status == 503
        assert "shutting down" in (await resp.json())["error"]["message"]


async def test_server_shutdown_drops_a_slow_stream() -> None:
    runner, port = await start_mock(port=0)
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/x/token_delay=600/api/chat"
        resp = await session.post(url, json=chat())
        assert json.loads(await resp.content.readline())["message"]["content"] == "Hello"
        await asyncio.wait_for(runner.cleanup(), 10)  # a hang guard, not a timing check
        with pytest.raises(aiohttp.ClientError):
            await resp.read()


async def test_non_stream_stall_holds_then_drops_the_connection(client: Client) -> None:
    request = asyncio.ensure_future(
        client.post("/x/stall_after=0/api/chat", json=chat(stream=False))
    )
    await wait_for_requests(client, "/x/stall_after=0", 1)
    assert not request.done()
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request


# ---------- reset ----------


@pytest.mark.parametrize("path", [OPENAI, OLLAMA, ANTHROPIC])
async def test_stream_resets_connection_after_n_tokens(client: Client, path: str) -> None:
    resp = await client.post(f"/x/reset_after=2{path}", json=chat(stream=True))
    received, error = await read_until_error(resp)
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert b"Hello" in received
    assert b" from" in received
    assert b" the" not in received
    await wait_for_open_streams(client, 0)


async def test_non_stream_reset_drops_the_connection_before_any_response(client: Client) -> None:
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await client.post("/x/reset_after=5/v1/chat/completions", json=chat())


async def test_reset_after_beyond_the_reply_never_fires_in_a_stream(client: Client) -> None:
    chunks = await sse_data(
        await client.post("/x/reset_after=50/v1/chat/completions", json=chat(stream=True))
    )
    assert chunks[-1] == "[DONE]"


# ---------- malformed ----------


@pytest.mark.parametrize("path", [OPENAI, OLLAMA, ANTHROPIC])
async def test_malformed_non_stream_body_is_not_json(client: Client, path: str) -> None:
    resp = await client.post(f"/x/malformed=1{path}", json=chat(stream=False))
    assert resp.status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(await resp.read())


async def test_malformed_sse_line_follows_the_first_token(client: Client) -> None:
    chunks = await sse_data(
        await client.post("/x/malformed=1/v1/chat/completions", json=chat(stream=True))
    )
    assert json.loads(chunks[1])["choices"][0]["delta"]["content"] == "Hello"
    with pytest.raises(json.JSONDecodeError):
        json.loads(chunks[2])
    resp = await client.post("/x/malformed=1/v1/messages", json=chat(stream=True))
    data = await sse_data(resp)
    with pytest.raises(json.JSONDecodeError):
        json.loads(data[3])


async def test_malformed_ndjson_line_follows_the_first_token(client: Client) -> None:
    resp = await client.post("/x/malformed=1/api/chat", json=chat())
    lines = (await resp.read()).decode().split("\n")
    assert json.loads(lines[0])["message"]["content"] == "Hello"
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[1])


# ---------- stream_error_after ----------


async def test_openai_stream_error_after_n_tokens_ends_without_done(client: Client) -> None:
    resp = await client.post("/x/stream_error_after=3/v1/chat/completions", json=chat(stream=True))
    chunks = await sse_data(resp)
    assert json.loads(chunks[-1]) == {
        "error": {"message": "mock stream error", "type": "server_error"}
    }
    assert "[DONE]" not in chunks
    assert openai_text(chunks[:-1]) == "Hello from the"


async def test_ollama_stream_error_after_n_tokens(client: Client) -> None:
    lines = await ndjson(await client.post("/x/stream_error_after=1/api/chat", json=chat()))
    assert lines[0]["message"]["content"] == "Hello"
    assert lines[-1] == {"error": "mock stream error"}
    assert len(lines) == 2


async def test_anthropic_stream_error_event_after_n_tokens(client: Client) -> None:
    resp = await client.post("/x/stream_error_after=2/v1/messages", json=chat(stream=True))
    events = await anthropic_events(resp)
    name, data = events[-1]
    assert name == "error"
    assert data["type"] == "error"
    assert data["error"]["type"] == "overloaded_error"
    assert [n for n, _ in events].count("content_block_delta") == 2
    assert "message_stop" not in [n for n, _ in events]


async def test_non_stream_with_stream_error_fault_answers_500(client: Client) -> None:
    resp = await client.post("/x/stream_error_after=2/v1/chat/completions", json=chat())
    assert resp.status == 500
    assert (await resp.json())["error"]["message"] == "mock stream error"


# ---------- echo ----------


@pytest.mark.parametrize("path", [OPENAI, OLLAMA, ANTHROPIC])
async def test_echo_replies_with_the_last_user_message(client: Client, path: str) -> None:
    content = "please  repeat\nthis exactly "
    body = chat(content)
    body["messages"].insert(0, {"role": "user", "content": "earlier message"})
    body["messages"].append({"role": "assistant", "content": "not me"})
    plain = await (await client.post(f"/x/echo=1{path}", json={**body, "stream": False})).json()
    assert complete_text(path, plain) == content
    streamed = await client.post(f"/x/echo=1{path}", json={**body, "stream": True})
    assert await streamed_text(path, streamed) == content


async def test_echo_stream_concatenates_to_the_message(client: Client) -> None:
    content = "the gateway must not touch this"
    chunks = await sse_data(
        await client.post("/x/echo=1/v1/chat/completions", json=chat(content, stream=True))
    )
    assert openai_text(chunks) == content
    body = await (await client.post("/x/echo=1/v1/chat/completions", json=chat(content))).json()
    assert body["choices"][0]["message"]["content"] == content
    assert body["usage"]["completion_tokens"] == 6


# ---------- tool_call ----------


async def test_tool_call_non_stream_names_the_first_tool(client: Client) -> None:
    tools = [{"type": "function", "function": {"name": "lookup_city", "parameters": {}}}]
    body = await (
        await client.post("/x/tool_call=1/v1/chat/completions", json=chat(tools=tools))
    ).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [
        {
            "id": "call_mock_1",
            "type": "function",
            "function": {"name": "lookup_city", "arguments": '{"city": "Paris"}'},
        }
    ]


async def test_tool_call_streams_as_deltas(client: Client) -> None:
    resp = await client.post("/x/tool_call=1/v1/chat/completions", json=chat(stream=True))
    chunks = [json.loads(c) for c in await sse_data(resp) if c != "[DONE]"]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    first = deltas[0]["tool_calls"][0]
    assert first["id"] == "call_mock_1"
    assert first["type"] == "function"
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    arguments = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas[1:-1])
    assert json.loads(arguments) == {"city": "Paris"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


# ---------- counters and recorded requests ----------


async def test_stats_count_chat_requests_per_prefix(client: Client) -> None:
    await client.post(OPENAI, json=chat())
    await client.post(OLLAMA, json=chat(stream=False))
    await client.post(ANTHROPIC, json=chat())
    await client.post("/x/status=500/v1/chat/completions", json=chat())
    await client.post("/x/status=500/api/chat", json=chat())
    await client.get("/v1/models")
    await client.get("/x/status=500/api/tags")
    assert await stats(client) == {"requests": {"": 3, "/x/status=500": 2}, "open_streams": 0}


async def test_reset_zeroes_the_counters(client: Client) -> None:
    await client.post(OPENAI, json=chat())
    resp = await client.post("/_mock/reset")
    assert resp.status == 200
    assert await stats(client) == {"requests": {}, "open_streams": 0}
    assert await (await client.get("/_mock/requests")).json() == []


async def test_open_streams_counts_streams_being_written(client: Client) -> None:
    resp = await client.post("/x/stall_after=1/v1/chat/completions", json=chat(stream=True))
    await resp.content.readline()
    await wait_for_open_streams(client, 1)
    resp.close()
    await wait_for_open_streams(client, 0)
    await (await client.post(OPENAI, json=chat(stream=True))).read()
    assert (await stats(client))["open_streams"] == 0


async def test_requests_record_headers_and_body(client: Client) -> None:
    headers = {
        "X-Request-ID": "req-42",
        "Authorization": "Bearer sk-1",
        "x-api-key": "sk-ant",
        "anthropic-version": "2023-06-01",
        "X-Other": "not kept",
    }
    await client.post("/x/tokens=2/v1/messages", json=chat("hi"), headers=headers)
    recorded = await (await client.get("/_mock/requests")).json()
    assert recorded == [
        {
            "path": "/x/tokens=2/v1/messages",
            "headers": {
                "X-Request-ID": "req-42",
                "Authorization": "Bearer sk-1",
                "x-api-key": "sk-ant",
                "anthropic-version": "2023-06-01",
            },
            "body": chat("hi"),
        }
    ]


async def test_recorded_requests_keep_only_the_last_hundred(client: Client) -> None:
    for index in range(105):
        await client.post("/x/status=500/api/chat", json={"n": index})
    recorded = await (await client.get("/_mock/requests")).json()
    assert len(recorded) == 100
    assert recorded[0]["body"] == {"n": 5}
    assert recorded[-1]["body"] == {"n": 104}


# ---------- bad requests and specs ----------


async def test_bad_fault_spec_is_a_loud_400(client: Client) -> None:
    resp = await client.post("/x/bogus=1/v1/chat/completions", json=chat())
    assert resp.status == 400
    assert "unknown key 'bogus'" in (await resp.json())["error"]["message"]
    resp = await client.post("/x/tokens=many/api/chat", json=chat())
    assert resp.status == 400
    assert "tokens" in (await resp.json())["error"]
    resp = await client.post("/x/status=2000/v1/messages", json=chat())
    assert resp.status == 400
    assert (await resp.json())["error"]["type"] == "invalid_request_error"
    assert (await client.get("/x/first_delay=-1/v1/models")).status == 400


async def test_invalid_chat_bodies_are_rejected_with_400(client: Client) -> None:
    resp = await client.post(OPENAI, data=b"{not json", headers={"Content-Type": JSON_TYPE})
    assert resp.status == 400
    assert (await client.post(OLLAMA, json={"messages": "nope"})).status == 400
    assert (await client.post(ANTHROPIC, json={"model": 3, "messages": []})).status == 400
    assert (await client.post(OPENAI, json=[1, 2])).status == 400


JSON_TYPE = "application/json"


def test_parse_spec_reads_every_key() -> None:
    spec = (
        "status=429,retry_after=5,first_delay=0.5,token_delay=0.01,tokens=3,stall_after=1,"
        "reset_after=2,malformed=1,stream_error_after=4,echo_auth=true,echo=yes,tool_call=on"
    )
    assert parse_spec(spec, Faults()) == Faults(
        status=429,
        retry_after="5",
        first_delay=0.5,
        token_delay=0.01,
        tokens=3,
        stall_after=1,
        reset_after=2,
        malformed=True,
        stream_error_after=4,
        echo_auth=True,
        echo=True,
        tool_call=True,
    )


def test_parse_spec_overrides_the_base_and_none_clears() -> None:
    base = Faults(status=500, tokens=4, echo=True)
    assert parse_spec("status=none,echo=0", base) == Faults(tokens=4)
    assert (
        parse_spec("retry_after=Wed%2C%2021%20Oct%202015", base).retry_after == "Wed, 21 Oct 2015"
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty fault spec"),
        ("status", "is not key=value"),
        ("=1", "is not key=value"),
        ("nope=1", "unknown key 'nope'"),
        ("tokens=1,tokens=2", "given twice"),
        ("status=200", "between 400 and 599"),
        ("status=abc", "expected an integer"),
        ("tokens=-1", "between 0 and"),
        ("first_delay=nan", "seconds between"),
        ("token_delay=soon", "a number of seconds"),
        ("malformed=maybe", "expected 1 or 0"),
        ("retry_after=%0A", "printable"),
        ("status=500,later", "is not key=value"),
    ],
)
def test_parse_spec_rejects_bad_specs_clearly(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_spec(spec, Faults())


# ---------- CLI flags and process ----------


def test_cli_flags_build_default_faults() -> None:
    parser = argparse.ArgumentParser()
    add_mock_arguments(parser)
    ns = parser.parse_args(
        [
            *("--status", "503", "--retry-after", "3", "--token-delay", "0.02"),
            *("--tokens", "4", "--stall-after", "2", "--echo-auth", "--tool-call"),
        ]
    )
    assert faults_from_args(ns) == Faults(
        status=503,
        retry_after="3",
        token_delay=0.02,
        tokens=4,
        stall_after=2,
        echo_auth=True,
        tool_call=True,
    )
    assert faults_from_args(parser.parse_args([])) == Faults()


def test_cli_flags_reject_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_mock_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--first-delay", "-2"])
    assert "--first-delay" in capsys.readouterr().err


def test_run_mock_serves_until_sigterm() -> None:
    port = free_port()
    code = (
        "from modelrouter.mock import Faults, run_mock; "
        f"run_mock('127.0.0.1', {port}, Faults(tokens=2))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", code]
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stderr is not None
            assert f"127.0.0.1:{port}" in proc.stderr.readline()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/chat",
                data=json.dumps(chat(stream=False)).encode(),
                headers={"Content-Type": JSON_TYPE},
            )
            with urllib.request.urlopen(request, timeout=10) as resp:
                assert json.loads(resp.read())["message"]["content"] == "Hello from"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


async def test_status_applies_only_to_the_first_n_requests_with_fail_first() -> None:
    import aiohttp as _aiohttp

    runner, port = await start_mock(port=0)
    try:
        url = f"http://127.0.0.1:{port}/x/status=500,fail_first=2/v1/chat/completions"
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        async with _aiohttp.ClientSession() as session:
            statuses = []
            for _ in range(4):
                async with session.post(url, json=body) as response:
                    statuses.append(response.status)
        assert statuses == [500, 500, 200, 200]
    finally:
        await runner.cleanup()
