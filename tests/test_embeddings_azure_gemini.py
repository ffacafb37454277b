"""`POST /v1/embeddings` to Azure OpenAI and Gemini deployments (the `openai` package as the
client, the mock's Azure and Gemini flavours upstream), and the two adapters' mapping."""

from __future__ import annotations

import base64
import struct
from typing import Any

import aiohttp
import msgspec
import pytest

from modelrouter.actors.upstream import Upstream
from modelrouter.config import ProviderSettings
from modelrouter.events import Embeddings, UpstreamFailure, Usage
from modelrouter.mock.embeddings import embed, gemini_batch_embed
from modelrouter.providers import build_adapter
from modelrouter.providers.base import Refusal
from modelrouter.redact import Redactor
from modelrouter.schemas import EmbedChat, EmbedInput, Message
from modelrouter.transport import Pool
from tests.conftest import Mock
from tests.test_azure_gemini_gateway import AZURE_KEY, GEMINI_KEY, Start, deployment, sdk, start

__all__ = ["start"]  # the fixture, shared with the chat tests of these kinds

MODEL = "embedder-mock"


def embedder(mock: Mock, kind: str, spec: str = "", **extra: Any) -> ProviderSettings:
    return msgspec.structs.replace(deployment(mock, kind, spec, **extra), model=MODEL)


def embed_request(
    texts: list[str] | None = None, tokens: list[list[int]] | None = None, **fields: Any
) -> EmbedChat:
    messages = [Message(role="user", content=text) for text in texts or ()]
    return EmbedChat(
        model=MODEL, messages=messages, embed=EmbedInput(texts=texts, tokens=tokens, **fields)
    )


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("azure", f"/openai/deployments/{MODEL}/embeddings?api-version=2024-10-21"),
        ("gemini", f"/v1beta/models/{MODEL}:batchEmbedContents"),
    ],
)
async def test_sdk_gets_float_and_base64_vectors_from_the_kind(
    start: Start, mock: Mock, kind: str, path: str
) -> None:
    client = await start(embedder(mock, kind))
    api = sdk(client)
    result = await api.embeddings.create(
        model=MODEL, input=["hello", "world"], encoding_format="float"
    )
    assert [item.embedding for item in result.data] == [embed("hello"), embed("world")]
    assert result.model == f"{kind}/{MODEL}"
    sent = (await mock.received())[-1]
    assert sent["path"] == path
    key_header = "api-key" if kind == "azure" else "x-goog-api-key"
    assert sent["headers"][key_header] == (AZURE_KEY if kind == "azure" else GEMINI_KEY)
    raw = await api.embeddings.with_raw_response.create(
        model=MODEL, input="hello", encoding_format="base64", dimensions=4
    )
    assert raw.headers["x-modelrouter-provider"] == kind
    packed = base64.b64decode(raw.parse().data[0].embedding)  # type: ignore[arg-type]
    assert list(struct.unpack("<4f", packed)) == pytest.approx(embed("hello", 4), abs=1e-6)


async def test_gemini_is_sent_one_request_per_input_and_its_usage_is_estimated(
    start: Start, mock: Mock
) -> None:
    client = await start(embedder(mock, "gemini"))
    result = await sdk(client).embeddings.create(
        model=MODEL, input=["a b", "c"], dimensions=3, encoding_format="float"
    )
    assert [item.embedding for item in result.data] == [embed("a b", 3), embed("c", 3)]
    # batchEmbedContents counts nothing: the inputs are estimated (never free to a budget),
    # as a cut stream's are: 4 characters and 4 a message, rounded up.
    assert result.usage.prompt_tokens == 1 + 2 * 4
    name = f"models/{MODEL}"
    assert (await mock.received())[-1]["body"] == {
        "requests": [
            {"model": name, "content": {"parts": [{"text": "a b"}]}, "outputDimensionality": 3},
            {"model": name, "content": {"parts": [{"text": "c"}]}, "outputDimensionality": 3},
        ]
    }


async def test_azure_v1_names_the_deployment_in_the_body(start: Start, mock: Mock) -> None:
    client = await start(embedder(mock, "azure", api_version="v1"))
    result = await sdk(client).embeddings.create(model=MODEL, input="hi", encoding_format="float")
    assert result.data[0].embedding == embed("hi")
    assert result.usage.prompt_tokens == 1
    sent = (await mock.received())[-1]
    assert sent["path"] == "/openai/v1/embeddings"
    assert sent["body"] == {"model": MODEL, "input": ["hi"], "encoding_format": "float"}


async def test_token_arrays_skip_gemini_for_azure(start: Start, mock: Mock) -> None:
    client = await start(embedder(mock, "gemini"), embedder(mock, "azure"))
    api = sdk(client)
    texts = await api.embeddings.with_raw_response.create(model=MODEL, input=["hi there"])
    assert texts.headers["x-modelrouter-provider"] == "gemini"
    tokens = await api.embeddings.with_raw_response.create(model=MODEL, input=[[1, 2, 3]])
    assert tokens.headers["x-modelrouter-provider"] == "azure"
    assert tokens.parse().data[0].embedding == pytest.approx(embed([1, 2, 3]), abs=1e-6)
    assert [r["path"].split("/")[1] for r in await mock.received()] == ["v1beta", "openai"]


async def test_a_failing_gemini_falls_over_to_azure(start: Start, mock: Mock) -> None:
    client = await start(embedder(mock, "gemini", "status=503"), embedder(mock, "azure"))
    raw = await sdk(client).embeddings.with_raw_response.create(model=MODEL, input="hello")
    assert raw.headers["x-modelrouter-provider"] == "azure"
    assert await mock.count("status=503") == 1


def adapter_of(kind: str, **extra: Any) -> Any:
    key = AZURE_KEY if kind == "azure" else GEMINI_KEY
    settings = ProviderSettings(
        name=kind,
        kind=kind,
        base_url="https://res.example.com",
        model=MODEL,
        api_key=key,
        rate_limit=0,
        **extra,
    )
    return build_adapter(settings)


def test_gemini_maps_texts_and_refuses_token_arrays_and_user() -> None:
    gemini = adapter_of("gemini")
    body = msgspec.json.decode(gemini.map_operation(embed_request(["x"]), "models/m"))
    assert body == {"requests": [{"model": "models/m", "content": {"parts": [{"text": "x"}]}}]}
    assert gemini.embed_refusals(embed_request(tokens=[[1]])) == [Refusal("input", "token arrays")]
    user = msgspec.structs.replace(embed_request(["x"]), user="u1")
    assert gemini.embed_refusals(user) == [Refusal("user")]
    assert gemini.embed_refusals(embed_request(["x"], dimensions=8)) == []
    answer = b'{"embeddings": [{"values": [0.5, -0.5]}, {"values": [1.0]}]}'
    assert gemini.map_operation_response("embed", answer) == [
        Embeddings([[0.5, -0.5], [1.0]]),
        Usage(0, 0),
    ]
    with pytest.raises(UpstreamFailure) as caught:
        gemini.map_operation_response("embed", b'{"embeddings": [{"vals": []}]}')
    assert caught.value.reason == "bad_response"


@pytest.mark.parametrize(
    ("extra", "target"),
    [
        ({}, "/openai/deployments/my%20dep/embeddings?api-version=2024-10-21"),
        (
            {"api_version": "2025-04-01-preview"},
            "/openai/deployments/my%20dep/embeddings?api-version=2025-04-01-preview",
        ),
        ({"api_version": "v1"}, "/openai/v1/embeddings"),
    ],
)
def test_azure_embeddings_request_line(extra: dict[str, Any], target: str) -> None:
    azure = adapter_of("azure", **extra)
    upstream = Upstream(azure, Pool(azure.url), Redactor())
    head = (
        upstream.operation_head_for("embed", "my dep")
        if azure.model_in_path
        else (upstream.operation_heads["embed"])
    )
    assert head.startswith(f"POST {target} HTTP/1.1\r\n".encode())
    assert f"api-key: {AZURE_KEY}".encode() in head
    assert azure.embed_refusals(embed_request(tokens=[[1]], dimensions=4)) == []


def test_gemini_embeddings_request_line() -> None:
    gemini = adapter_of("gemini")
    upstream = Upstream(gemini, Pool(gemini.url), Redactor())
    head = upstream.operation_head_for("embed", "models/gemini-embedding-001")
    assert head.startswith(b"POST /v1beta/models/gemini-embedding-001:batchEmbedContents HTTP/1.1")


@pytest.mark.parametrize(
    ("body", "fault"),
    [
        ({}, "requests"),
        ({"requests": [{"model": "models/m", "content": {"parts": [{"inline": 1}]}}]}, "parts"),
        ({"requests": [{"model": "m", "content": {"parts": [{"text": "x"}]}}]}, "models/"),
        (
            {
                "requests": [
                    {"model": "models/m", "content": {"parts": [{"text": "x"}]}}
                    | {"outputDimensionality": 0}
                ]
            },
            "dimensions",
        ),
    ],
)
def test_the_mock_refuses_a_malformed_batch_embed(body: dict[str, Any], fault: str) -> None:
    with pytest.raises(ValueError, match=fault):
        gemini_batch_embed(body)


async def test_the_mock_answers_gemini_s_errors_on_batch_embed(mock: Mock) -> None:
    """A fault on the embeddings path answers in Gemini's error shape (the adapter reads it)."""
    async with aiohttp.ClientSession() as session:
        url = f"{mock.url}/x/status=429/v1beta/models/m:batchEmbedContents"
        async with session.post(url, json={"requests": []}) as response:
            assert response.status == 429
            assert (await response.json())["error"]["status"] == "RESOURCE_EXHAUSTED"
