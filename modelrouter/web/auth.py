"""Client authentication: `Authorization: Bearer <key>` against API_KEY's keys, constant time."""

from __future__ import annotations

import hmac

from aiohttp import web

from modelrouter.errors import ApiError


def check_auth(request: web.Request, keys: tuple[bytes, ...]) -> None:
    if not keys:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    # aiohttp decodes header bytes as UTF-8 with surrogateescape: encoding back the same way
    # gives the bytes sent, whatever they are (a stray \xff is a wrong key, not an error).
    given = token.strip().encode("utf-8", "surrogateescape") if scheme.lower() == "bearer" else b""
    matched = False
    for key in keys:  # compare against every key so timing does not reveal which one matched
        matched |= hmac.compare_digest(given, key)
    if not given or not matched:
        raise ApiError(401, "unauthorized", "missing or invalid API key (Authorization: Bearer)")
