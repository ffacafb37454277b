"""Client authentication: a key of API_KEY (constant time), giving the request's `Identity`.

`authenticate` is the one entry every client route calls; virtual keys resolve here too.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from modelrouter.errors import ApiError
from modelrouter.tenants.identity import Identity
from modelrouter.tenants.lookup import VIRTUAL_PREFIX, KeyRefused, KeyResolver, KeysUnavailable
from modelrouter.web.runtime import SUMMARY, Runtime


def bearer_token(request: web.Request) -> bytes:
    """The `Authorization: Bearer` token as the bytes sent (b"" when there is none)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    # aiohttp decodes header bytes as UTF-8 with surrogateescape: encoding back the same way
    # gives the bytes sent, whatever they are (a stray \xff is a wrong key, not an error).
    return token.strip().encode("utf-8", "surrogateescape") if scheme.lower() == "bearer" else b""


UNAUTHORIZED = "missing or invalid API key (Authorization: Bearer)"


def static_key(keys: tuple[bytes, ...], given: bytes) -> int:
    """The index of `given` in `keys` (-1: none), every key compared: timing tells nothing."""
    found = -1
    for index, key in enumerate(keys):
        if hmac.compare_digest(given, key):
            found = index
    return found if given else -1


def check_auth(request: web.Request, keys: tuple[bytes, ...], given: bytes | None = None) -> int:
    """The index of the key the request carries (-1 when auth is off), or a 401."""
    if not keys:
        return -1
    if given is None:
        given = bearer_token(request)
    found = static_key(keys, given)
    if found < 0:
        raise ApiError(401, "unauthorized", UNAUTHORIZED)
    return found


def refused(runtime: Runtime, reason: str) -> ApiError:
    """The same 401 whatever the reason: it does not tell whether the key ever existed."""
    runtime.metrics.key_rejections.labels(reason).inc()
    return ApiError(401, "unauthorized", UNAUTHORIZED)


def unavailable(runtime: Runtime, retry_after: float) -> ApiError:
    runtime.metrics.key_rejections.labels("unavailable").inc()
    return ApiError(
        503, "keys_unavailable", "the key cannot be checked now: retry", retry_after=retry_after
    )


async def virtual_identity(runtime: Runtime, resolver: KeyResolver, given: bytes) -> Identity:
    """A virtual key's identity, a 401 (any refusal) or a 503 (cannot be checked now)."""
    if not given:
        try:
            if runtime.open_without_key and await resolver.anyone_allowed():
                return runtime.identities[-1]
        except KeysUnavailable as exc:
            raise unavailable(runtime, exc.retry_after) from None
        raise refused(runtime, "missing")
    try:
        return await resolver.identity(given)
    except KeyRefused as exc:
        raise refused(runtime, exc.reason) from None
    except KeysUnavailable as exc:
        raise unavailable(runtime, exc.retry_after) from None


async def authenticate(
    request: web.Request, runtime: Runtime, token: bytes | None = None
) -> Identity:
    """The request's identity (also noted on its summary), or a 401. `token`: the secret when
    the route takes it from elsewhere than `Authorization: Bearer` (Anthropic's `x-api-key`).

    A key of API_KEY first (the seed's contract, unchanged), then a virtual key (with
    DATABASE_URL); without API_KEY, a request with no key passes only on loopback while no
    virtual key exists."""
    resolver = runtime.resolver
    if resolver is None:
        identity = runtime.identities[check_auth(request, runtime.api_keys, token)]
    else:
        given = bearer_token(request) if token is None else token
        found = static_key(runtime.api_keys, given)
        if found >= 0:
            identity = runtime.identities[found]
        elif not given.startswith(VIRTUAL_PREFIX):  # not a virtual key's secret
            if runtime.api_keys:
                raise refused(runtime, "unknown" if given else "missing")
            # No API_KEY: a token that is not a virtual key's is no key (as before keys).
            identity = await virtual_identity(runtime, resolver, b"")
        else:
            known = resolver.known(given)  # the cache's answer, without a coroutine
            identity = (
                known if known is not None else await virtual_identity(runtime, resolver, given)
            )
    summary = request[SUMMARY]
    summary.identity = identity
    summary.client = identity.client_id
    return identity
