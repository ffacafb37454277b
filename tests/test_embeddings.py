"""`POST /v1/embeddings` through the official `openai` package (and LangChain's
`OpenAIEmbeddings`), against the mock's OpenAI and Ollama embeddings."""

from __future__ import annotations

import base64
import struct
from typing import Any

import openai
import pytest

from modelrouter.mock.embeddings import EMBED_SIZE, embed
from tests.conftest import CLIENT_KEY, Gateway, Mock, two_providers
from tests.test_openai_sdk import sdk

MODEL = "text-embedding-mock"


def embedders(mock: Mock, groq: str = "", openrouter: str = "", **extra: str) -> dict[str, str]:
    """Two OpenAI-compatible deployments serving the same embeddings model."""
    return two_providers(
        mock,
        groq,
        openrouter,
        GROQ_MODEL=MODEL,
        OPENROUTER_MODEL=MODEL,
        API_KEY=CLIENT_KEY,
        **extra,
    )


async def test_sdk_gets_float_vectors(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**embedders(mock))
    result = await sdk(client).embeddings.create(
        model=MODEL, input=["hello", "world"], encoding_format="float"
    )
    assert [item.embedding for item in result.data] == [embed("hello"), embed("world")]
    assert [item.index for item in result.data] == [0, 1]
    assert result.model == f"groq/{MODEL}"
    assert result.usage.prompt_tokens == 2
    sent = (await mock.received())[-1]
    assert sent["path"] == "/v1/embeddings"
    assert sent["body"] == {"model": MODEL, "input": ["hello", "world"], "encoding_format": "float"}


async def test_sdk_gets_base64_vectors(gateway: Gateway, mock: Mock) -> None:
    """The SDK asks for base64 by default and decodes it itself (numpy or struct)."""
    client = await gateway(**embedders(mock))
    api = sdk(client)
    raw = await api.embeddings.with_raw_response.create(
        model=MODEL, input="hello", encoding_format="base64"
    )
    data = (await raw.http_response.aread()) if hasattr(raw, "http_response") else b""
    assert b'"embedding":"' in data
    decoded = struct.unpack(f"<{EMBED_SIZE}f", base64.b64decode(raw.parse().data[0].embedding))  # type: ignore[arg-type]
    assert list(decoded) == pytest.approx(embed("hello"), abs=1e-6)
    result = await api.embeddings.create(model=MODEL, input="hello", dimensions=4)
    assert result.data[0].embedding == pytest.approx(embed("hello", 4), abs=1e-6)


async def test_falls_over_to_a_deployment_of_the_same_model(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**embedders(mock, groq="status=500"))
    raw = await sdk(client).embeddings.with_raw_response.create(model=MODEL, input="hello")
    assert raw.headers["x-modelrouter-provider"] == "openrouter"
    assert raw.parse().model == f"openrouter/{MODEL}"
    assert await mock.count("status=500") == 1


async def test_one_vector_short_is_a_bad_answer_and_the_next_deployment_answers(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**embedders(mock, groq="short=1"))
    api = sdk(client)
    raw = await api.embeddings.with_raw_response.create(
        model=MODEL, input=["hello", "world"], encoding_format="float"
    )
    assert raw.headers["x-modelrouter-provider"] == "openrouter"
    assert [item.embedding for item in raw.parse().data] == [embed("hello"), embed("world")]
    assert await mock.count("short=1") == 1


async def test_never_falls_over_to_another_model(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**two_providers(mock, groq="status=500", API_KEY=CLIENT_KEY))
    with pytest.raises(openai.InternalServerError):
        await sdk(client).embeddings.create(model="groq/text-embedding-mock", input="hello")
    assert len(await mock.received()) == 1  # openrouter serves another model: not tried


async def test_token_arrays_skip_a_deployment_that_cannot_take_them(
    gateway: Gateway, mock: Mock
) -> None:
    env = embedders(mock) | {
        "PROVIDER_ORDER": "ollama,groq",
        "OLLAMA_BASE_URL": mock.url,
        "OLLAMA_MODEL": MODEL,
    }
    client = await gateway(**env)
    api = sdk(client)
    texts = await api.embeddings.with_raw_response.create(model=MODEL, input=["hi there"])
    assert texts.headers["x-modelrouter-provider"] == "ollama"
    assert texts.parse().data[0].embedding == pytest.approx(embed("hi there"), abs=1e-6)
    assert (await mock.received())[-1]["path"] == "/api/embed"
    tokens = await api.embeddings.with_raw_response.create(model=MODEL, input=[[1, 2, 3]])
    assert tokens.headers["x-modelrouter-provider"] == "groq"
    assert tokens.parse().data[0].embedding == pytest.approx(embed([1, 2, 3]), abs=1e-6)


async def test_a_chat_only_kind_is_a_clear_400(gateway: Gateway, mock: Mock) -> None:
    env = {
        "PROVIDER_ORDER": "anthropic",
        "ANTHROPIC_API_KEY": "sk-ant-x",
        "ANTHROPIC_BASE_URL": mock.url,
        "API_KEY": CLIENT_KEY,
    }
    client = await gateway(**env)
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk(client).embeddings.create(model="auto", input="hello")
    assert "embeddings" in caught.value.message


async def test_embeddings_are_cached_when_deterministic(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**embedders(mock, CACHE_MODE="deterministic"))
    api = sdk(client)
    first = await api.embeddings.with_raw_response.create(model=MODEL, input="same")
    second = await api.embeddings.with_raw_response.create(model=MODEL, input="same")
    assert first.headers["x-modelrouter-cache"] == "miss"
    assert second.headers["x-modelrouter-cache"] == "hit"
    assert first.parse().data == second.parse().data
    assert len(await mock.received()) == 1


@pytest.mark.parametrize(
    ("body", "fault"),
    [
        ({"model": MODEL}, "input"),
        ({"model": MODEL, "input": []}, "input"),
        ({"model": MODEL, "input": ""}, "input"),
        ({"model": MODEL, "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": MODEL, "input": "x", "stream": True}, "stream"),
    ],
)
async def test_bad_requests_are_openai_400s(
    gateway: Gateway, mock: Mock, body: dict[str, Any], fault: str
) -> None:
    client = await gateway(**embedders(mock))
    response = await client.post(
        "/v1/embeddings", json=body, headers={"Authorization": f"Bearer {CLIENT_KEY}"}
    )
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert fault in error["message"]
    assert response.headers["X-Request-ID"]


async def test_langchain_openai_embeddings_work_unchanged(gateway: Gateway, mock: Mock) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    client = await gateway(**embedders(mock))
    embedder = langchain_openai.OpenAIEmbeddings(
        model=MODEL,
        base_url=str(client.make_url("/v1")),
        api_key=CLIENT_KEY,
        check_embedding_ctx_length=False,  # no tiktoken download: the texts go as they are
        max_retries=0,
    )
    vectors = await embedder.aembed_documents(["hello", "world"])
    assert vectors == [pytest.approx(embed("hello")), pytest.approx(embed("world"))]
    assert await embedder.aembed_query("hello") == pytest.approx(embed("hello"))


async def test_models_list_marks_the_models_that_embed(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(**embedders(mock, EMBEDDING_MODELS=f"{MODEL},other-embedder"))
    listed = {m.id: m for m in (await sdk(client).models.list()).data}
    assert (listed[f"groq/{MODEL}"].model_extra or {})["embeddings"] is True
    assert "embeddings" not in (listed["auto"].model_extra or {})
