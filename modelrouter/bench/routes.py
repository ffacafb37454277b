"""What each `make bench` scenario sends, by the API it exercises: the direct baseline's URL
and body (straight to the mock upstream) and the gateway's path and body."""

from __future__ import annotations

from typing import Literal

import msgspec

from modelrouter.bench.loadgen import chat_body

Api = Literal["seed", "openai", "messages", "embeddings"]
SAY_HELLO = [{"role": "user", "content": "Say hello"}]
EMBED_MODEL = "mock-embed"


def requests_of(
    api: Api, *, mock: str, upstream: str, provider: str, stream: bool
) -> tuple[str, bytes, str, bytes]:
    """(direct URL, direct body, gateway path, gateway body) for one scenario. Every API but
    embeddings asks the same chat question of the same upstream (OpenAI's format)."""
    direct_url = f"{mock}{upstream}/v1/chat/completions"
    direct_body = chat_body("openai", stream=stream, model="mock-model")
    model = f"{provider}/mock-model"
    encode = msgspec.json.encode
    if api == "seed":
        path = "/stream" if stream else "/chat"
        body = chat_body("seed", stream=stream, provider=provider, fallback=False)
    elif api == "openai":
        path, body = "/v1/chat/completions", chat_body("openai", stream=stream, model=model)
    elif api == "messages":
        ask = {"model": model, "max_tokens": 64, "messages": SAY_HELLO, "stream": stream}
        path, body = "/v1/messages", encode(ask)
    else:
        direct_url = f"{mock}{upstream}/v1/embeddings"
        direct_body = encode({"model": EMBED_MODEL, "input": "Say hello"})
        path = "/v1/embeddings"
        body = encode({"model": f"{provider}/{EMBED_MODEL}", "input": "Say hello"})
    return direct_url, direct_body, path, body
