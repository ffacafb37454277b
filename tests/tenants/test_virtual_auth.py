"""Virtual keys on the request path: a key made through /admin/keys authenticates client
requests as itself; revoked, disabled, expired, rotated-out and unknown keys get the same 401;
the static API_KEY list keeps working beside them; an admin key is not a client key."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from modelrouter.tenants import new_secret
from tests.conftest import CLIENT_KEY, Gateway, Mock, two_providers
from tests.history.conftest import wait_rows
from tests.tenants.conftest import ADMIN_KEY, AS_ADMIN

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def keyed_gateway(gateway: Gateway, mock: Mock, database: str, **env: str) -> Any:
    return await gateway(
        **two_providers(mock, DATABASE_URL=database, ADMIN_API_KEY=ADMIN_KEY, **env)
    )


async def new_key(client: TestClient[Any, Any], **settings: Any) -> dict[str, Any]:
    response = await client.post("/admin/keys", json={"name": "k", **settings}, headers=AS_ADMIN)
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def status(client: TestClient[Any, Any], secret: str, path: str = "/chat") -> int:
    return (await client.post(path, json=CHAT, headers=bearer(secret))).status


async def test_a_virtual_key_authenticates_as_its_id(
    gateway: Gateway, mock: Mock, database: str
) -> None:
    client = await keyed_gateway(gateway, mock, database, API_KEY=CLIENT_KEY)
    key = await new_key(client)
    response = await client.post("/chat", json=CHAT, headers=bearer(key["key"]))
    assert response.status == 200, await response.text()
    assert [row["client_id"] for row in await wait_rows(database, 1)] == [key["id"]]
    assert await status(client, CLIENT_KEY) == 200  # the static key still works
    assert await status(client, ADMIN_KEY) == 401  # an admin key is not a client key


async def test_refusals_are_one_401_that_does_not_say_why(
    gateway: Gateway, mock: Mock, database: str
) -> None:
    client = await keyed_gateway(gateway, mock, database)
    revoked, disabled, rotated = [await new_key(client, name=n) for n in ("r", "d", "o")]
    await client.delete(f"/admin/keys/{revoked['id']}", headers=AS_ADMIN)
    await client.patch(f"/admin/keys/{disabled['id']}", json={"disabled": True}, headers=AS_ADMIN)
    await client.post(f"/admin/keys/{rotated['id']}/rotate", headers=AS_ADMIN)
    bodies = []
    for secret in (revoked["key"], disabled["key"], rotated["key"], new_secret(), "mr-typo"):
        response = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(secret))
        assert response.status == 401
        body = await response.json()
        body["error"].pop("request_id", None)
        bodies.append(body)
    assert all(body == bodies[0] for body in bodies)
    metrics = await (await client.get("/metrics")).text()
    for reason in ("revoked", "disabled", "unknown"):  # rotated without grace: unknown
        assert f'modelrouter_key_rejections_total{{reason="{reason}"}}' in metrics


async def test_without_api_key_no_key_passes_only_until_a_virtual_key_exists(
    gateway: Gateway, mock: Mock, database: str
) -> None:
    client = await keyed_gateway(gateway, mock, database)
    assert (await client.post("/chat", json=CHAT)).status == 200
    await new_key(client)
    assert (await client.post("/chat", json=CHAT)).status == 401
    assert await status(client, "not-a-virtual-key") == 401
