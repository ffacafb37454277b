"""Client authentication: `Authorization: Bearer <key>` against API_KEY's keys, constant time."""

from __future__ import annotations

import hmac

from aiohttp import web

from modelrouter.errors import ApiError


def check_auth(request: web.Request, keys: tuple[bytes, ...]) -> int:
    """The index of the key the request carries (-1 when auth is off), or a 401."""
    if not keys:
        return -1
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    # aiohttp decodes header bytes as UTF-8 with surrogateescape: encoding back the same way
    # gives the bytes sent, whatever they are (a stray \xff is a wrong key, not an error).
    given = token.strip().encode("utf-8", "surrogateescape") if scheme.lower() == "bearer" else b""
    found = -1
    for index, key in enumerate(keys):  # every key is compared: timing does not tell which
        if hmac.compare_digest(given, key):
            found = index
    if not given or found < 0:
        raise ApiError(401, "unauthorized", "missing or invalid API key (Authorization: Bearer)")
    return found
