"""`/admin/overview`, `/admin/errors` and the `/ui` files over HTTP: the admin key only, the
figures of the deployments and of failed requests (never what was said), the documented
shapes, and the pages under their headers."""

from __future__ import annotations

from collections import deque
from typing import Any

import msgspec

from modelrouter.web.accounting import ACCOUNTING
from modelrouter.web.console import ErrorList, Overview
from modelrouter.web.openapi import openapi_document
from modelrouter.web.runtime import RECENT, RUNTIME
from tests.conftest import CLIENT_KEY, USER, Gateway, Mock, two_providers
from tests.tenants.conftest import ADMIN_KEY, AS_ADMIN

CANARY = "prompt-canary-c0ffee"


async def test_the_overview_and_errors_need_the_admin_key(gateway: Gateway) -> None:
    client = await gateway(API_KEY=CLIENT_KEY, ADMIN_API_KEY=ADMIN_KEY)
    for path in ("/admin/overview", "/admin/errors"):
        for headers in ({}, {"Authorization": f"Bearer {CLIENT_KEY}"}):
            response = await client.get(path, headers=headers)
            assert response.status == 401
            body = await response.json()
            assert body["error"]["type"] == "unauthorized"
            assert body["error"]["request_id"] == response.headers["X-Request-ID"]


async def test_without_admin_api_key_they_are_not_there(gateway: Gateway) -> None:
    client = await gateway(API_KEY=CLIENT_KEY)
    response = await client.get("/admin/overview", headers=AS_ADMIN)
    assert response.status == 404


async def test_without_the_console_nothing_is_recorded_for_it(gateway: Gateway, mock: Mock) -> None:
    client = await gateway(API_KEY=CLIENT_KEY, **two_providers(mock, groq="status=503"))
    as_client = {"Authorization": f"Bearer {CLIENT_KEY}"}
    assert (await client.post("/chat", json=USER, headers=as_client)).status == 200
    refused = await client.post("/chat", json={"messages": []}, headers=as_client)
    assert refused.status == 400
    client.app[ACCOUNTING].drain()
    recent = client.app[RECENT]
    assert recent.errors == deque()
    assert recent.rings == {}
    assert client.app[RUNTIME].system.recent is None
    assert all(p.window is None for p in client.app[RUNTIME].system.router.providers.values())


async def test_the_overview_shows_a_failing_deployment_and_the_errors_no_prompt(
    gateway: Gateway, mock: Mock
) -> None:
    env = two_providers(mock, groq="status=503", GROQ_RATE_LIMIT="100")
    client = await gateway(API_KEY=CLIENT_KEY, ADMIN_API_KEY=ADMIN_KEY, **env)
    as_client = {"Authorization": f"Bearer {CLIENT_KEY}"}
    canary = {"messages": [{"role": "user", "content": CANARY}]}
    assert (await client.post("/chat", json=canary, headers=as_client)).status == 200
    refused = await client.post("/chat", json={"messages": []}, headers=as_client)
    assert refused.status == 400
    await client.post("/stream", json=USER, headers=as_client)

    response = await client.get("/admin/overview", headers=AS_ADMIN)
    assert response.status == 200
    overview = msgspec.json.decode(await response.read(), type=Overview)
    groq, openrouter = overview.deployments
    assert (groq.name, groq.state, groq.last_reason) == ("groq", "blacklisted", "server_error")
    assert groq.blacklisted_until is not None
    assert (groq.last_5m.attempts, groq.last_5m.errors) == (1, 1)
    assert groq.rate_limit == 100
    assert groq.rate_budget_used is not None
    assert 0 < groq.rate_budget_used <= 0.05
    assert openrouter.state == "ok"
    assert openrouter.rate_limit is None
    assert openrouter.last_60m.attempts == 2
    assert openrouter.last_5m.ttfb_p50_ms is not None
    assert overview.scope.health == "replica"  # memory state: this replica's
    assert overview.cache.mode == "off"
    assert overview.history == "off"

    response = await client.get("/admin/errors", headers=AS_ADMIN)
    text = await response.text()
    assert CANARY not in text
    assert CLIENT_KEY not in text
    errors = msgspec.json.decode(text, type=ErrorList)
    assert errors.scope == "replica"
    (entry,) = errors.data
    assert (entry.route, entry.status, entry.type) == ("/chat", 400, "invalid_request")
    assert entry.request_id == refused.headers["X-Request-ID"]


def test_both_are_in_the_openapi_document_for_the_admin_only() -> None:
    paths: dict[str, Any] = openapi_document(auth=True)["paths"]
    for path in ("/admin/overview", "/admin/errors"):
        assert paths[path]["get"]["security"] == [{"admin": []}]
        assert "200" in paths[path]["get"]["responses"]


async def test_the_pages_come_with_a_strict_policy_and_unknown_files_are_404(
    gateway: Gateway,
) -> None:
    client = await gateway()
    for path in ("/ui", "/ui/", "/ui/js/app.js", "/ui/console.css"):
        response = await client.get(path)
        assert response.status == 200, path
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "Set-Cookie" not in response.headers
    assert (await client.get("/ui/js/app.js")).content_type == "text/javascript"
    missing = await client.get("/ui/../pyproject.toml")
    assert missing.status == 404
    response = await client.get("/ui/nothing.js")
    assert response.status == 404
    assert (await response.json())["error"]["type"] == "not_found"
