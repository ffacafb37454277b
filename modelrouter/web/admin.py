"""`/admin/*`: virtual keys over HTTP, for ADMIN_API_KEY only; and the key store's lifetime in
the app (`keys_ctx`, `KEYS`).

- Only a key of ADMIN_API_KEY opens these routes, and those keys open nothing else (the
  configuration refuses a key in both lists). Client keys are never looked at here.
- Without ADMIN_API_KEY the routes are not there: any method on `/admin/...` is a 404, the
  same as any unknown path.
- Without DATABASE_URL: 503 `keys_unavailable`, saying so.
- A secret is in the answer of a creation or a rotation only, never in a log line.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
import structlog
from aiohttp import web

from modelrouter.errors import ApiError, bad_request
from modelrouter.schemas import json_encoder
from modelrouter.tenants import (
    DB_ERRORS,
    BadCursor,
    BadKey,
    KeyPage,
    KeyPatch,
    KeyRevoked,
    KeyStore,
    NameTaken,
    NewKey,
    Rotation,
)
from modelrouter.tenants.store import MAX_LIMIT
from modelrouter.web.auth import bearer_token
from modelrouter.web.body import read_body
from modelrouter.web.runtime import SETTINGS

log = structlog.get_logger("modelrouter.admin")
KEYS = web.AppKey("keys", KeyStore)
DEFAULT_LIMIT = 50
T = TypeVar("T")
_FIELD = re.compile(r"at `\$\.([A-Za-z_]+)")


async def keys_ctx(app: web.Application) -> AsyncIterator[None]:
    """With DATABASE_URL: the key store for the app's lifetime (nothing connects before the
    first use, so start-up never waits for the database)."""
    settings = app[SETTINGS]
    if settings.database_url is None:
        yield
        return
    store = app[KEYS] = KeyStore.from_url(settings.database_url)
    await store.start()
    try:
        yield
    finally:
        await store.close()


def add_routes(app: web.Application) -> None:
    app.router.add_post("/admin/keys", create_key)
    app.router.add_get("/admin/keys", list_keys)
    app.router.add_get("/admin/keys/{key_id}", get_key)
    app.router.add_patch("/admin/keys/{key_id}", patch_key)
    app.router.add_delete("/admin/keys/{key_id}", revoke_key)
    app.router.add_post("/admin/keys/{key_id}/rotate", rotate_key)


# -- the door ------------------------------------------------------------------------------------
def _store(request: web.Request) -> KeyStore:
    """The key store, once the caller has shown an admin key."""
    require_admin(request)
    store = request.app.get(KEYS)
    if store is None:
        raise ApiError(
            503,
            "keys_unavailable",
            "virtual keys live in PostgreSQL and DATABASE_URL is not set",
            retryable=False,
        )
    return store


def require_admin(request: web.Request) -> None:
    """401 unless the caller shows a key of ADMIN_API_KEY (every /admin route asks this)."""
    given = bearer_token(request)
    found = False
    for key in request.app[SETTINGS].tenants.admin_keys:  # each compared: timing tells nothing
        found |= hmac.compare_digest(given, key.encode())
    if not given or not found:
        raise ApiError(401, "unauthorized", "missing or invalid admin key (Authorization: Bearer)")


def admin_store(request: web.Request) -> KeyStore:
    """The door of every /admin route (`/admin/spend` too): an admin key, and the database."""
    return _store(request)


async def _db(call: Awaitable[T]) -> T:
    """A store call, its failures as the client's errors."""
    try:
        return await call
    except NameTaken as exc:
        raise ApiError(409, "name_taken", str(exc), param="name", retryable=False) from None
    except KeyRevoked as exc:
        raise ApiError(409, "key_revoked", str(exc), retryable=False) from None
    except BadCursor as exc:
        raise bad_request(str(exc), param="cursor") from None
    except BadKey as exc:
        raise bad_request(str(exc)) from None
    except DB_ERRORS:
        raise ApiError(
            503, "keys_unavailable", "the keys database is not answering", retry_after=1.0
        ) from None


def _decode(body: bytes, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        found = _FIELD.search(str(exc))
        raise bad_request(f"invalid key settings: {exc}", param=found and found.group(1)) from None
    except msgspec.DecodeError as exc:
        raise bad_request(f"request body is not valid JSON: {exc}") from None


def _json(data: Any, *, status: int = 200) -> web.Response:
    return web.Response(
        body=json_encoder.encode(data), status=status, content_type="application/json"
    )


def _not_found(key_id: str) -> ApiError:
    return ApiError(404, "key_not_found", f"no key {key_id!r}")


def _limit(query: Any) -> int:
    value = query.get("limit")
    if value is None:
        return DEFAULT_LIMIT
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise bad_request(f"`limit` must be an integer from 1 to {MAX_LIMIT}", param="limit")
    return int(value)


# -- the routes ----------------------------------------------------------------------------------
async def create_key(request: web.Request) -> web.Response:
    store = _store(request)
    new = _decode(await read_body(request, request.app[SETTINGS].max_body_bytes), NewKey)
    key, secret = await _db(store.create(new))
    log.info("key_created", key_id=key.id, name=key.name, team=key.team)
    return _json(key.created(secret, datetime.now(UTC)), status=201)


async def list_keys(request: web.Request) -> web.Response:
    store = _store(request)
    query = request.query
    keys, cursor = await _db(
        store.page(limit=_limit(query), cursor=query.get("cursor"), team=query.get("team"))
    )
    now = datetime.now(UTC)
    return _json(KeyPage(data=[key.info(now) for key in keys], next_cursor=cursor))


async def get_key(request: web.Request) -> web.Response:
    store = _store(request)
    key_id = request.match_info["key_id"]
    key = await _db(store.get(key_id))
    if key is None:
        raise _not_found(key_id)
    return _json(key.info(datetime.now(UTC)))


async def patch_key(request: web.Request) -> web.Response:
    store = _store(request)
    key_id = request.match_info["key_id"]
    patch = _decode(await read_body(request, request.app[SETTINGS].max_body_bytes), KeyPatch)
    key = await _db(store.patch(key_id, patch))
    if key is None:
        raise _not_found(key_id)
    log.info("key_updated", key_id=key.id, fields=sorted(patch.changes()))
    return _json(key.info(datetime.now(UTC)))


async def revoke_key(request: web.Request) -> web.Response:
    store = _store(request)
    key_id = request.match_info["key_id"]
    key = await _db(store.revoke(key_id))
    if key is None:
        raise _not_found(key_id)
    log.info("key_revoked", key_id=key.id, name=key.name)
    return _json(key.info(datetime.now(UTC)))


async def rotate_key(request: web.Request) -> web.Response:
    store = _store(request)
    key_id = request.match_info["key_id"]
    rotation = Rotation()  # no body: no grace
    if request.body_exists:
        body = await read_body(request, request.app[SETTINGS].max_body_bytes)
        rotation = _decode(body, Rotation)
    rotated = await _db(store.rotate(key_id, grace_seconds=rotation.grace_seconds))
    if rotated is None:
        raise _not_found(key_id)
    key, secret = rotated
    log.info("key_rotated", key_id=key.id, grace_seconds=rotation.grace_seconds)
    return _json(key.created(secret, datetime.now(UTC)))
