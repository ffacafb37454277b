"""What a request allows the response cache: `Cache-Control: no-cache` (no lookup; the answer
may still be stored) and `no-store` (nothing stored); on the OpenAI API also
`x-modelrouter-cache: off` (neither). Read only when CACHE_MODE is on."""

from __future__ import annotations

from aiohttp import web

from modelrouter.actors.system import USE_CACHE, CachePolicy

HEADER = "x-modelrouter-cache"
NO_CACHE = CachePolicy(lookup=False, store=False)


def cache_policy(request: web.Request) -> CachePolicy:
    headers = request.headers
    if request.path.startswith("/v1/") and headers.get(HEADER, "").strip().lower() == "off":
        return NO_CACHE
    control = headers.get("Cache-Control")
    if control is None:
        return USE_CACHE
    tokens = {part.split("=", 1)[0].strip().lower() for part in control.split(",")}
    return CachePolicy(lookup="no-cache" not in tokens, store="no-store" not in tokens)
