"""Gemini's embeddings: `models/{model}:batchEmbedContents`
(https://ai.google.dev/api/embeddings#method:-models.batchembedcontents).

One `EmbedContentRequest` per input in `requests`, each naming the model again
(`models/{model}`) with the text as the one part of its `content`, and `outputDimensionality`
when the client asked for `dimensions`. The answer lists `{"values": [...]}` in the requests'
order. Gemini takes text only (no token arrays: the adapter refuses them) and its batch answer
carries no token count, so the usage reported is 0 (docs/compatibility.md says so).
"""

from __future__ import annotations

from typing import Any

import msgspec

from modelrouter.events import Usage
from modelrouter.providers.base import decode
from modelrouter.schemas import EmbedChat

_encode = msgspec.json.Encoder().encode


class _Values(msgspec.Struct):
    values: list[float]


class _Batch(msgspec.Struct):
    embeddings: list[_Values]


_decode_batch = msgspec.json.Decoder(_Batch).decode


def batch_body(request: EmbedChat, model: str) -> bytes:
    """The `batchEmbedContents` body of `request`'s texts."""
    name = model if model.startswith("models/") else f"models/{model}"
    extra: dict[str, Any] = {}
    if request.embed.dimensions is not None:
        extra["outputDimensionality"] = request.embed.dimensions
    requests = [
        {"model": name, "content": {"parts": [{"text": text}]}, **extra}
        for text in request.embed.texts or ()
    ]
    return _encode({"requests": requests})


def batch_vectors(body: bytes) -> tuple[list[list[float]], Usage]:
    """The vectors of a `batchEmbedContents` answer, and a usage of 0 (Gemini gives none)."""
    parsed = decode(_decode_batch, body, "embeddings body")
    return [item.values for item in parsed.embeddings], Usage(0, 0)
