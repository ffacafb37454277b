"""`/admin/keys` over HTTP: only ADMIN_API_KEY opens it, and it opens nothing else; keys are
created, listed, read, changed, revoked and rotated; bad input is a clear 4xx in the one error
format, with nothing written; a secret is shown once and never logged."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from modelrouter.config import ConfigError, load_settings
from modelrouter.tenants import hash_secret, new_secret, well_formed
from modelrouter.web.openapi import openapi_document
from tests.conftest import CLIENT_KEY, Gateway
from tests.tenants.conftest import ADMIN_KEY, AS_ADMIN

ADMIN_PATHS = [
    ("POST", "/admin/keys"),
    ("GET", "/admin/keys"),
    ("GET", "/admin/keys/key_0123456789abcdef"),
    ("PATCH", "/admin/keys/key_0123456789abcdef"),
    ("DELETE", "/admin/keys/key_0123456789abcdef"),
    ("POST", "/admin/keys/key_0123456789abcdef/rotate"),
]


async def admin_client(gateway: Gateway, database: str | None, **env: str) -> TestClient[Any, Any]:
    extra = {"ADMIN_API_KEY": ADMIN_KEY, **env}
    if database is not None:
        extra["DATABASE_URL"] = database
    return await gateway(**extra)


async def call(client: TestClient[Any, Any], method: str, path: str, **kw: Any) -> tuple[int, Any]:
    kw.setdefault("headers", AS_ADMIN)
    response = await client.request(method, path, **kw)
    return response.status, await response.json()


async def count_keys(url: str) -> int:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM modelrouter_keys"))
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


# -- who may come in ---------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path"), [*ADMIN_PATHS, ("PUT", "/admin/keys")])
async def test_without_admin_api_key_every_admin_path_is_a_404(
    gateway: Gateway, method: str, path: str
) -> None:
    client = await gateway(API_KEY=CLIENT_KEY)
    response = await client.request(method, path, headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    assert response.status == 404
    body = await response.json()
    assert body["error"]["type"] == "not_found"
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]


@pytest.mark.parametrize(("method", "path"), ADMIN_PATHS)
async def test_without_database_url_the_admin_api_says_keys_are_unavailable(
    gateway: Gateway, method: str, path: str
) -> None:
    client = await admin_client(gateway, None)
    response = await client.request(method, path, headers=AS_ADMIN, json={"name": "x"})
    assert response.status == 503
    body = await response.json()
    assert body["error"]["type"] == "keys_unavailable"
    assert "DATABASE_URL" in body["error"]["message"]
    assert response.headers["x-should-retry"] == "false"


@pytest.mark.parametrize(
    "authorization", [None, f"Bearer {CLIENT_KEY}", "Bearer wrong-admin-key-000000", ADMIN_KEY]
)
async def test_only_an_admin_key_opens_the_admin_api(
    gateway: Gateway, database: str, authorization: str | None
) -> None:
    client = await admin_client(gateway, database, API_KEY=CLIENT_KEY)
    headers = {} if authorization is None else {"Authorization": authorization}
    status, body = await call(client, "GET", "/admin/keys", headers=headers)
    assert status == 401
    assert body["error"]["type"] == "unauthorized"
    assert await count_keys(database) == 0


async def test_an_admin_key_is_not_a_client_key(gateway: Gateway, database: str) -> None:
    client = await admin_client(gateway, database, API_KEY=CLIENT_KEY)
    for path in ("/v1/models", "/v1/history"):
        response = await client.get(path, headers=AS_ADMIN)
        assert response.status == 401, path
    response = await client.post("/chat", headers=AS_ADMIN, json={"messages": []})
    assert response.status == 401


def test_a_key_in_both_admin_api_key_and_api_key_is_refused_at_start_up() -> None:
    with pytest.raises(ConfigError, match="an admin key is not a client key"):
        load_settings({"API_KEY": ADMIN_KEY, "ADMIN_API_KEY": ADMIN_KEY})
    with pytest.raises(ConfigError, match="at least 16"):
        load_settings({"ADMIN_API_KEY": "short"})
    with pytest.raises(ConfigError, match="prefix of virtual"):
        load_settings({"ADMIN_API_KEY": new_secret()})


# -- the keys ----------------------------------------------------------------------------------
async def test_a_key_is_created_listed_read_changed_rotated_and_revoked(
    gateway: Gateway, database: str
) -> None:
    client = await admin_client(gateway, database)
    with capture_logs() as logs:
        status, created = await call(
            client,
            "POST",
            "/admin/keys",
            json={"name": "search-bot", "team": "search", "rpm": 20, "budget_usd": 0.01},
        )
        assert status == 201
        secret = created["key"]
        assert well_formed(secret)
        assert created["name"] == "search-bot"
        assert (created["rpm"], created["budget_usd"], created["budget_period"]) == (
            20,
            0.01,
            "total",
        )
        assert created["status"] == "active"
        key_id = created["id"]

        status, page = await call(client, "GET", "/admin/keys")
        assert status == 200
        assert [k["id"] for k in page["data"]] == [key_id]
        assert page["next_cursor"] is None
        status, shown = await call(client, "GET", f"/admin/keys/{key_id}")
        assert status == 200
        assert shown == {k: v for k, v in created.items() if k != "key"}

        status, patched = await call(
            client, "PATCH", f"/admin/keys/{key_id}", json={"rpm": None, "models": ["groq/*"]}
        )
        assert status == 200
        assert (patched["rpm"], patched["models"]) == (None, ["groq/*"])

        status, rotated = await call(
            client, "POST", f"/admin/keys/{key_id}/rotate", json={"grace_seconds": 60}
        )
        assert status == 200
        assert well_formed(rotated["key"])
        assert rotated["key"] != secret
        assert rotated["previous_key_expires_at"] is not None

        status, revoked = await call(client, "DELETE", f"/admin/keys/{key_id}")
        assert status == 200
        assert revoked["status"] == "revoked"
        assert revoked["revoked_at"] is not None
        status, still = await call(client, "GET", f"/admin/keys/{key_id}")
        assert (status, still["status"]) == (200, "revoked")
        for body in (page, shown, patched, revoked, still):
            text = str(body)
            assert secret not in text
            assert rotated["key"] not in text
            assert hash_secret(secret) not in text
    logged = str(logs)
    assert secret not in logged
    assert rotated["key"] not in logged
    assert {"key_created", "key_updated", "key_rotated", "key_revoked"} <= {
        line["event"] for line in logs
    }


async def test_rotation_without_a_body_has_no_grace(gateway: Gateway, database: str) -> None:
    client = await admin_client(gateway, database)
    _, created = await call(client, "POST", "/admin/keys", json={"name": "a"})
    status, rotated = await call(client, "POST", f"/admin/keys/{created['id']}/rotate")
    assert status == 200
    assert rotated["previous_key_expires_at"] is None


async def test_keys_come_in_pages(gateway: Gateway, database: str) -> None:
    client = await admin_client(gateway, database)
    for i in range(3):
        await call(client, "POST", "/admin/keys", json={"name": f"k{i}"})
    status, first = await call(client, "GET", "/admin/keys", params={"limit": "2"})
    assert status == 200
    assert [k["name"] for k in first["data"]] == ["k2", "k1"]
    cursor = first["next_cursor"]
    _, second = await call(client, "GET", "/admin/keys", params={"limit": "2", "cursor": cursor})
    assert ([k["name"] for k in second["data"]], second["next_cursor"]) == (["k0"], None)


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": "a", "rpm": -1}, "rpm"),
        (b'{"name": "a", "budget_usd": 1e400}', "budget_usd"),  # JSON's way to say infinity
        ({"name": "a", "budget_period": "year"}, "budget_period"),
        ({"name": "a", "metadata": {"blob": "x" * 5000}}, None),
        ({"name": "a", "surprise": True}, None),
        ({"rpm": 5}, None),
    ],
)
async def test_bad_settings_are_a_400_with_nothing_written(
    gateway: Gateway, database: str, body: dict[str, Any] | bytes, param: str | None
) -> None:
    client = await admin_client(gateway, database)
    sent = {"data": body} if isinstance(body, bytes) else {"json": body}
    response = await client.post(
        "/admin/keys", headers={**AS_ADMIN, "X-Request-ID": "bad-1"}, **sent
    )
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["type"] == "invalid_request"
    assert error["request_id"] == "bad-1"
    if param is not None:
        assert param in error["message"]
    assert await count_keys(database) == 0


async def test_malformed_json_and_limits_out_of_range_are_400s(
    gateway: Gateway, database: str
) -> None:
    client = await admin_client(gateway, database)
    response = await client.post("/admin/keys", headers=AS_ADMIN, data=b"{nope")
    assert response.status == 400
    for query in ({"limit": "0"}, {"limit": "201"}, {"limit": "x"}, {"cursor": "garbage"}):
        status, body = await call(client, "GET", "/admin/keys", params=query)
        assert (status, body["error"]["type"]) == (400, "invalid_request"), query


async def test_a_name_clash_is_a_409_with_nothing_written(gateway: Gateway, database: str) -> None:
    client = await admin_client(gateway, database)
    await call(client, "POST", "/admin/keys", json={"name": "dup"})
    response = await client.post("/admin/keys", headers=AS_ADMIN, json={"name": "dup", "rpm": 1})
    assert response.status == 409
    assert (await response.json())["error"]["type"] == "name_taken"
    assert response.headers["x-should-retry"] == "false"
    assert await count_keys(database) == 1


async def test_unknown_keys_are_404s_and_a_revoked_key_cannot_be_rotated(
    gateway: Gateway, database: str
) -> None:
    client = await admin_client(gateway, database)
    for method, path in ADMIN_PATHS[2:]:
        for key_id in ("key_0123456789abcdef", "nonsense"):
            sent = {"json": {"rpm": 1}} if method == "PATCH" else {}
            status, body = await call(
                client, method, path.replace("key_0123456789abcdef", key_id), **sent
            )
            assert (status, body["error"]["type"]) == (404, "key_not_found"), (method, key_id)
    _, created = await call(client, "POST", "/admin/keys", json={"name": "gone"})
    await call(client, "DELETE", f"/admin/keys/{created['id']}")
    status, body = await call(client, "POST", f"/admin/keys/{created['id']}/rotate")
    assert (status, body["error"]["type"]) == (409, "key_revoked")


async def test_a_database_that_does_not_answer_is_a_503_to_retry(gateway: Gateway) -> None:
    client = await admin_client(gateway, "postgresql://postgres@127.0.0.1:1/none")
    status, body = await call(client, "GET", "/admin/keys")
    assert (status, body["error"]["type"]) == (503, "keys_unavailable")


# -- the document ------------------------------------------------------------------------------
def test_the_admin_routes_are_in_the_openapi_document() -> None:
    for auth in (True, False):
        document = openapi_document(auth=auth)
        paths = document["paths"]
        assert set(paths["/admin/keys"]) == {"post", "get"}
        assert set(paths["/admin/keys/{key_id}"]) == {"get", "patch", "delete"}
        assert set(paths["/admin/keys/{key_id}/rotate"]) == {"post"}
        create = paths["/admin/keys"]["post"]
        assert create["security"] == [{"admin": []}]
        assert "201" in create["responses"]
        assert "admin" in document["components"]["securitySchemes"]
        schemas = document["components"]["schemas"]
        assert {"NewKey", "KeyPatch", "KeyInfo", "CreatedKey", "KeyPage", "Rotation"} <= set(
            schemas
        )
        assert schemas["NewKey"]["additionalProperties"] is False
        assert "key" not in schemas["KeyInfo"]["properties"]
