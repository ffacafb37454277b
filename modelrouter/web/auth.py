"""Client authentication: a key of API_KEY (constant time), giving the request's `Identity`.

`authenticate` is the one entry every client route calls; virtual keys resolve here too.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from modelrouter.errors import ApiError
from modelrouter.tenants.identity import Identity
from modelrouter.web.runtime import SUMMARY, Runtime


def bearer_token(request: web.Request) -> bytes:
    """The `Authorization: Bearer` token as the bytes sent (b"" when there is none)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    # aiohttp decodes header bytes as UTF-8 with surrogateescape: encoding back the same way
    # gives the bytes sent, whatever they are (a stray \xff is a wrong key, not an error).
    return token.strip().encode("utf-8", "surrogateescape") if scheme.lower() == "bearer" else b""


def check_auth(request: web.Request, keys: tuple[bytes, ...], given: bytes | None = None) -> int:
    """The index of the key the request carries (-1 when auth is off), or a 401."""
    if not keys:
        return -1
    if given is None:
        given = bearer_token(request)
    found = -1
    for index, key in enumerate(keys):  # every key is compared: timing does not tell which
        if hmac.compare_digest(given, key):
            found = index
    if not given or found < 0:
        raise ApiError(401, "unauthorized", "missing or invalid API key (Authorization: Bearer)")
    return found


async def authenticate(
    request: web.Request, runtime: Runtime, token: bytes | None = None
) -> Identity:
    """The request's identity (also noted on its summary), or a 401. `token`: the secret when
    the route takes it from elsewhere than `Authorization: Bearer` (Anthropic's `x-api-key`)."""
    identity = runtime.identities[check_auth(request, runtime.api_keys, token)]
    summary = request[SUMMARY]
    summary.identity = identity
    summary.client = identity.client_id
    return identity
