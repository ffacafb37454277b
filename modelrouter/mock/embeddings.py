"""The mock's answers that are not chats: embeddings (vectors of a fixed size, or the
`dimensions` asked, that depend only on the input) in OpenAI's (`/v1/embeddings`, and Azure's
paths), Ollama's (`/api/embed`) and Gemini's (`:batchEmbedContents`) shapes, and Anthropic's
token count (`/v1/messages/count_tokens`)."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import msgspec

from modelrouter.mock.text import parse_chat

EMBED_SIZE = 8  # the vectors' length when the request asks for none
MAX_DIMENSIONS = 4096
_encode = msgspec.json.Encoder().encode


def embed(item: str | list[int], size: int = EMBED_SIZE) -> list[float]:
    """A unit vector of `size` numbers drawn from a hash of the input alone."""
    seed = _encode(item)
    raw: list[float] = []
    counter = 0
    while len(raw) < size:
        digest = hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        raw += [(byte - 127.5) / 127.5 for byte in digest]
        counter += 1
    vector = raw[:size]
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [round(x / norm, 6) for x in vector]


def _inputs(body: dict[str, Any]) -> list[str | list[int]]:
    given = body.get("input")
    if isinstance(given, str) or (isinstance(given, list) and given and isinstance(given[0], int)):
        return [given]
    if isinstance(given, list) and given and all(isinstance(x, str | list) for x in given):
        return given
    raise ValueError("'input' must be a string, a list of strings or token arrays")


def _size(body: dict[str, Any]) -> int:
    size = body.get("dimensions", EMBED_SIZE)
    if not isinstance(size, int) or not 1 <= size <= MAX_DIMENSIONS:
        raise ValueError(f"'dimensions' must be an integer from 1 to {MAX_DIMENSIONS}")
    return size


def _tokens(item: str | list[int]) -> int:
    return len(item) if isinstance(item, list) else max(1, len(item.split()))


def openai_embeddings(body: dict[str, Any]) -> bytes:
    inputs, size = _inputs(body), _size(body)
    data = [
        {"object": "embedding", "index": i, "embedding": embed(item, size)}
        for i, item in enumerate(inputs)
    ]
    tokens = sum(map(_tokens, inputs))
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return _encode({"object": "list", "data": data, "model": body.get("model"), "usage": usage})


def ollama_embed(body: dict[str, Any]) -> bytes:
    inputs, size = _inputs(body), _size(body)
    if any(not isinstance(item, str) for item in inputs):
        raise ValueError("'input' must be a string or a list of strings")
    vectors = [embed(item, size) for item in inputs]
    tokens = sum(map(_tokens, inputs))
    return _encode({"model": body.get("model"), "embeddings": vectors, "prompt_eval_count": tokens})


def gemini_batch_embed(body: dict[str, Any]) -> bytes:
    """`batchEmbedContents`: a vector per request, each of its content's text parts joined
    (the same vector as OpenAI's for that text), `outputDimensionality` long if given."""
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise ValueError("'requests' must be a non-empty list")
    vectors = []
    for item in requests:
        content = item.get("content") if isinstance(item, dict) else None
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list) or not all(
            isinstance(p, dict) and isinstance(p.get("text"), str) for p in parts
        ):
            raise ValueError("each request needs 'content.parts' of text")
        if not str(item.get("model", "")).startswith("models/"):
            raise ValueError("each request's 'model' must be 'models/{model}'")
        size = _size({"dimensions": item.get("outputDimensionality", EMBED_SIZE)})
        vectors.append({"values": embed("".join(p["text"] for p in parts), size)})
    return _encode({"embeddings": vectors})


def count_tokens(body: dict[str, Any]) -> bytes:
    """The input tokens as the mock counts a prompt (a word a token), as Anthropic's answer;
    a body with `max_tokens` or `stream` is refused, as Anthropic's count_tokens does."""
    for field in ("max_tokens", "stream"):
        if field in body:
            raise ValueError(f"{field}: Extra inputs are not permitted")
    return _encode({"input_tokens": parse_chat(body, stream_default=False).prompt_tokens})
