"""The mock provider's Azure OpenAI and Gemini flavours: their wire shapes, and the fault names."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from modelrouter.mock import create_mock_app
from modelrouter.mock.gemini import SIGNATURE
from modelrouter.mock.text import REPLY_TOKENS

Client = TestClient[Any, Any]
ClientFactory = Callable[..., Awaitable[Client]]

AZURE = "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
AZURE_V1 = "/openai/v1/chat/completions"
GEMINI = "/v1beta/models/gemini-2.5-flash:generateContent"
GEMINI_STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
TEXT = "".join(REPLY_TOKENS[:8])
CHAT = {"messages": [{"role": "user", "content": "what is the weather like"}]}
CONTENTS = {
    "systemInstruction": {"parts": [{"text": "be brief"}]},
    "contents": [{"role": "user", "parts": [{"text": "what is the weather like"}]}],
}


@pytest.fixture
async def client(aiohttp_client: ClientFactory) -> Client:
    return await aiohttp_client(create_mock_app())


def faulty(spec: str, path: str) -> str:
    return f"/x/{spec}{path}"


async def sse(client: Client, path: str, body: dict[str, Any]) -> list[str]:
    response = await client.post(path, json=body)
    assert response.status == 200
    return [
        line.removeprefix("data: ")
        for line in (await response.text()).splitlines()
        if line.startswith("data: ")
    ]


def gemini_text(chunks: list[str]) -> str:
    parsed = [json.loads(chunk) for chunk in chunks]
    return "".join(
        part.get("text", "") for c in parsed for part in c["candidates"][0]["content"]["parts"]
    )


# --- Azure ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [AZURE, AZURE_V1])
async def test_azure_answers_with_openai_s_body_and_its_prompt_filter_results(
    client: Client, path: str
) -> None:
    body = await (await client.post(path, json=CHAT)).json()
    assert body["choices"][0]["message"]["content"] == TEXT
    assert body["usage"]["completion_tokens"] == 8
    assert body["prompt_filter_results"][0]["content_filter_results"]["hate"]["filtered"] is False


async def test_azure_stream_opens_with_a_prompt_filter_chunk_without_choices(
    client: Client,
) -> None:
    chunks = await sse(client, AZURE, {**CHAT, "stream": True})
    first = json.loads(chunks[0])
    assert first["choices"] == []
    assert "prompt_filter_results" in first
    text = "".join(
        json.loads(c)["choices"][0]["delta"].get("content") or ""
        for c in chunks[1:-1]
        if json.loads(c)["choices"]
    )
    assert text == TEXT
    assert chunks[-1] == "[DONE]"


async def test_azure_errors_carry_azure_s_codes(client: Client) -> None:
    missing = await client.post(faulty("status=404", AZURE), json=CHAT)
    assert (await missing.json())["error"]["code"] == "DeploymentNotFound"
    limited = await client.post(faulty("status=429", AZURE), json=CHAT)
    assert (await limited.json())["error"]["code"] == "429"


async def test_azure_429_says_how_long_to_wait_in_seconds_and_milliseconds(client: Client) -> None:
    response = await client.post(faulty("status=429,retry_after=2.5", AZURE), json=CHAT)
    assert response.headers["Retry-After"] == "2.5"
    assert response.headers["retry-after-ms"] == "2500"
    dated = "Wed, 21 Oct 2037 07:28:00 GMT"
    response = await client.post(faulty(f"status=429,retry_after={dated}", AZURE), json=CHAT)
    assert response.headers["Retry-After"] == dated
    assert "retry-after-ms" not in response.headers


async def test_azure_echo_auth_quotes_the_api_key_header(client: Client) -> None:
    response = await client.post(
        faulty("status=401,echo_auth=1", AZURE), json=CHAT, headers={"api-key": "az-secret"}
    )
    assert "api-key: az-secret" in (await response.json())["error"]["message"]


# --- Gemini --------------------------------------------------------------------------------------


async def test_gemini_answers_a_generate_content_response(client: Client) -> None:
    body = await (await client.post(GEMINI, json=CONTENTS)).json()
    candidate = body["candidates"][0]
    assert candidate["content"] == {"parts": [{"text": TEXT}], "role": "model"}
    assert candidate["finishReason"] == "STOP"
    assert body["modelVersion"] == "gemini-2.5-flash"
    assert body["usageMetadata"] == {
        "promptTokenCount": 7,  # the words of the system instruction and the user turn
        "candidatesTokenCount": 8,
        "totalTokenCount": 15,
    }


async def test_gemini_streams_chunks_in_crlf_sse_the_last_one_finishing(client: Client) -> None:
    response = await client.post(GEMINI_STREAM, json=CONTENTS)
    raw = await response.read()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert raw.endswith(b"\r\n\r\n")
    chunks = [
        line.removeprefix("data: ") for line in raw.decode().splitlines() if line.startswith("data")
    ]
    assert gemini_text(chunks) == TEXT
    last = json.loads(chunks[-1])
    assert last["candidates"][0]["finishReason"] == "STOP"
    assert last["usageMetadata"]["candidatesTokenCount"] == 8
    assert all("finishReason" not in json.loads(c)["candidates"][0] for c in chunks[:-1])


@pytest.mark.parametrize(
    "path",
    [
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",  # a JSON array: not mocked
        "/v1beta/models/gemini-2.5-flash:countTokens",
        "/v1beta/models/:generateContent",
    ],
)
async def test_gemini_refuses_what_it_does_not_mock_with_a_google_400(
    client: Client, path: str
) -> None:
    response = await client.post(path, json=CONTENTS)
    assert response.status == 400
    assert (await response.json())["error"]["status"] == "INVALID_ARGUMENT"


async def test_gemini_tool_call_comes_whole_and_signed(client: Client) -> None:
    body = {
        **CONTENTS,
        "tools": [{"functionDeclarations": [{"name": "lookup"}, {"name": "other"}]}],
    }
    whole = await (await client.post(faulty("tool_call=1", GEMINI), json=body)).json()
    expected = {"functionCall": {"name": "lookup", "args": {"city": "Paris"}}}
    assert whole["candidates"][0]["content"]["parts"] == [
        {**expected, "thoughtSignature": SIGNATURE}
    ]
    chunks = await sse(client, faulty("tool_call=1", GEMINI_STREAM), body)
    parts = [json.loads(c)["candidates"][0]["content"]["parts"] for c in chunks]
    assert parts == [[{**expected, "thoughtSignature": SIGNATURE}], []]


@pytest.mark.parametrize(
    ("status", "name"), [(429, "RESOURCE_EXHAUSTED"), (404, "NOT_FOUND"), (503, "UNAVAILABLE")]
)
async def test_gemini_errors_are_google_s_shape(client: Client, status: int, name: str) -> None:
    response = await client.post(faulty(f"status={status}", GEMINI), json=CONTENTS)
    assert response.status == status
    assert (await response.json())["error"] == {
        "code": status,
        "message": f"mock error {status}",
        "status": name,
    }


async def test_gemini_stream_error_is_an_error_chunk(client: Client) -> None:
    chunks = await sse(client, faulty("stream_error_after=2", GEMINI_STREAM), CONTENTS)
    assert gemini_text(chunks[:-1]) == "".join(REPLY_TOKENS[:2])
    assert json.loads(chunks[-1])["error"]["status"] == "INTERNAL"


async def test_gemini_stream_without_its_end_never_says_why_it_stopped(client: Client) -> None:
    chunks = await sse(client, faulty("no_done=1", GEMINI_STREAM), CONTENTS)
    assert gemini_text(chunks) == TEXT
    assert all("finishReason" not in json.loads(c)["candidates"][0] for c in chunks)


async def test_gemini_echo_replies_with_the_last_user_turn(client: Client) -> None:
    body = await (await client.post(faulty("echo=1", GEMINI), json=CONTENTS)).json()
    assert body["candidates"][0]["content"]["parts"] == [{"text": "what is the weather like"}]


async def test_gemini_malformed_fault_breaks_the_body_and_the_stream(client: Client) -> None:
    whole = await client.post(faulty("malformed=1", GEMINI), json=CONTENTS)
    with pytest.raises(json.JSONDecodeError):
        json.loads(await whole.text())
    chunks = await sse(client, faulty("malformed=1", GEMINI_STREAM), CONTENTS)
    with pytest.raises(json.JSONDecodeError):
        json.loads(chunks[1])


async def test_gemini_echo_auth_quotes_the_goog_api_key_header(client: Client) -> None:
    response = await client.post(
        faulty("status=403,echo_auth=1", GEMINI), json=CONTENTS, headers={"x-goog-api-key": "g-1"}
    )
    assert "x-goog-api-key: g-1" in (await response.json())["error"]["message"]


async def test_recorded_requests_keep_the_query_and_the_new_key_headers(client: Client) -> None:
    await client.post(AZURE, json=CHAT, headers={"api-key": "a"})
    await client.post(GEMINI_STREAM, json=CONTENTS, headers={"x-goog-api-key": "g"})
    recorded = await (await client.get("/_mock/requests")).json()
    assert [(r["path"], r["headers"]) for r in recorded] == [
        (AZURE, {"api-key": "a"}),
        (GEMINI_STREAM, {"x-goog-api-key": "g"}),
    ]
