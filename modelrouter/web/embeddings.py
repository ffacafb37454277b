"""`POST /v1/embeddings`: OpenAI's embeddings format, so its SDKs (and LangChain's
`OpenAIEmbeddings`) work unchanged.

The request is routed as a whole answer is (`web.answers.route`): planning keeps the
deployments that serve the first candidate's model and can take the request (token arrays,
`dimensions`), the provider actors admit it (health, tickets, rate budget) and the fallback
walk moves on after a failure; under CACHE_MODE=deterministic its vectors are cached. The
upstream is always asked for floats; `encoding_format: base64` is encoded here (little-endian
float32, as OpenAI's).
"""

from __future__ import annotations

import base64
import struct
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from modelrouter.errors import bad_request
from modelrouter.events import Embeddings
from modelrouter.schemas import EmbedChat, EmbedInput, Message
from modelrouter.web.answers import response_headers
from modelrouter.web.auth import authenticate
from modelrouter.web.body import read_body
from modelrouter.web.openai_format import model_id
from modelrouter.web.operations import gather
from modelrouter.web.runtime import RUNTIME, SUMMARY

MAX_INPUTS = 2048  # OpenAI's limit of inputs per request
_encode = msgspec.json.Encoder().encode
_Inputs = Annotated[list[Any], msgspec.Meta(min_length=1, max_length=MAX_INPUTS)]
_TOKENS = list[Annotated[list[Annotated[int, msgspec.Meta(ge=0)]], msgspec.Meta(min_length=1)]]


class _Request(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    input: Annotated[str, msgspec.Meta(min_length=1)] | _Inputs
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, msgspec.Meta(ge=1, le=65536)] | None = None
    user: Annotated[str, msgspec.Meta(max_length=256)] | None = None


_decode = msgspec.json.Decoder(_Request).decode


def _inputs(given: str | list[Any]) -> tuple[list[str] | None, list[list[int]] | None]:
    """`input` as texts or as token arrays (one of them None)."""
    if isinstance(given, str):
        return [given], None
    try:
        if isinstance(given[0], str):
            return msgspec.convert(given, list[Annotated[str, msgspec.Meta(min_length=1)]]), None
        if isinstance(given[0], int):
            return None, msgspec.convert([given], _TOKENS)
        return None, msgspec.convert(given, _TOKENS)
    except msgspec.ValidationError as exc:
        raise bad_request(
            "invalid request: `input` must be a string, a list of strings, a token array or a "
            f"list of token arrays ({exc})",
            param="input",
        ) from None


def parse_embeddings_request(body: bytes) -> tuple[EmbedChat, bool]:
    """The request as routed, and whether the client wants base64; a 400 naming the fault."""
    try:
        request = _decode(body)
    except msgspec.ValidationError as exc:
        raise bad_request(f"invalid request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise bad_request(f"request body is not valid JSON: {exc}") from None
    texts, tokens = _inputs(request.input)
    # The history and the estimates read the texts as messages (a token array: none to read).
    messages = [Message("user", text) for text in texts] if texts else [Message("user", "")]
    chat = EmbedChat(
        messages=messages,
        model=request.model,
        user=request.user,
        embed=EmbedInput(texts, tokens, request.dimensions),
    )
    return chat, request.encoding_format == "base64"


def _vector(vector: list[float], base64_wanted: bool) -> list[float] | str:
    if not base64_wanted:
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


async def embeddings(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    await authenticate(request, runtime)
    chat, base64_wanted = parse_embeddings_request(
        await read_body(request, runtime.settings.max_body_bytes)
    )
    events, usage, answering = await gather(request, runtime, chat)
    vectors = next((e.vectors for e in events if isinstance(e, Embeddings)), [])
    body: dict[str, Any] = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _vector(v, base64_wanted)}
            for i, v in enumerate(vectors)
        ],
        "model": model_id(answering),
        "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
    }
    return web.Response(
        body=_encode(body),
        content_type="application/json",
        headers=response_headers(request[SUMMARY], answering),
    )
