"""Reloading the routing file in a running gateway (in process, against mock deployments):
new requests take the new file, requests in flight finish on the old one, a kept deployment
keeps its actor and health, a broken file is refused with its lines and changes nothing."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from modelrouter.routing import load_settings
from modelrouter.web import create_app
from modelrouter.web.reload import (
    EARLY,
    RELOAD_SIGNAL,
    RELOADER,
    Refused,
    early_signals,
    install_signals,
)
from modelrouter.web.runtime import RUNTIME
from tests.conftest import USER, Mock, wait_until
from tests.routing.support import BASE_ENV, write
from tests.routing.test_gateway import AUTH, group_file, served_by
from tests.tenants.conftest import ADMIN_KEY, AS_ADMIN

Reloadable = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def reloadable(aiohttp_client: Any, tmp_path: Path) -> Reloadable:
    """A gateway on tmp_path/router.yaml that reloads from the same environment."""

    async def start(text: str, **env: str) -> TestClient[Any, Any]:
        path = write(tmp_path / "router.yaml", text)
        full = BASE_ENV | {"MODELROUTER_CONFIG": path} | env
        app = create_app(load_settings(full), env=full)
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client

    return start


def rewrite(tmp_path: Path, text: str) -> None:
    write(tmp_path / "router.yaml", text)


async def test_a_reload_sends_new_requests_to_the_new_file(
    reloadable: Reloadable, mock: Mock, tmp_path: Path
) -> None:
    client = await reloadable(group_file("ordered", [mock.base("tokens=2"), mock.base()]))
    assert await served_by(client, "fast") == "d0"
    changed = group_file("ordered", [mock.base("tokens=2"), mock.base()]).replace(
        "strategy: ordered", "strategy: ordered}\n  slow: {strategy: ordered"
    )
    changed = changed.replace("models: {fast: mock-model}", "models: {slow: mock-model}", 1)
    rewrite(tmp_path, changed)
    report = await client.app[RELOADER].reload()
    assert report.retuned == ("d0",), "same endpoint, other groups: the actor is kept"
    assert report.kept == ("d1",)
    assert await served_by(client, "fast") == "d1", "d0 no longer serves fast"
    assert await served_by(client, "slow") == "d0"
    listed = await (await client.get("/v1/models", headers=AUTH)).json()
    assert [m["id"] for m in listed["data"]] == ["auto", "slow", "fast", "d0/slow", "d1/fast"]


async def test_a_kept_deployment_keeps_its_health_and_a_removed_one_leaves(
    reloadable: Reloadable, mock: Mock, tmp_path: Path
) -> None:
    failing, good, other = mock.base("status=500"), mock.base(), mock.base("tokens=3")
    client = await reloadable(group_file("ordered", [failing, good]))
    system = client.app[RUNTIME].system
    assert await served_by(client, "fast") == "d1", "d0 failed and is blacklisted"
    d0 = system.router.providers["d0"]
    text = group_file("ordered", [failing, other, good]).replace("name: d2", "name: d9")
    rewrite(tmp_path, text)
    report = await client.app[RELOADER].reload()
    assert (report.kept, report.added, report.removed) == (("d0",), ("d1", "d9"), ("d1",))
    assert system.router.providers["d0"] is d0, "the same actor"
    assert d0.status() == "blacklisted", "and its blacklist"
    assert await served_by(client, "fast") == "d1"
    assert await mock.count("tokens=3") == 1, "the new d1"
    health = await (await client.get("/health")).json()
    assert set(health["providers"]) == {"d0", "d1", "d9"}
    assert await mock.count("status=500") == 1, "still skipped: never called again"
    rewrite(tmp_path, group_file("ordered", [mock.base("tokens=5"), good]))
    report = await client.app[RELOADER].reload()
    assert report.added == ("d0", "d1"), "d0 (and d1) have other endpoints now: new actors"
    assert system.router.providers["d0"].status() == "ok", "which does not inherit a blacklist"
    assert await served_by(client, "fast") == "d0"


async def test_a_request_in_flight_finishes_on_the_deployment_a_reload_removed(
    reloadable: Reloadable, mock: Mock, tmp_path: Path
) -> None:
    slow = mock.base("token_delay=0.05,tokens=20")
    client = await reloadable(group_file("ordered", [slow]))
    system = client.app[RUNTIME].system
    old = system.router.providers["d0"]
    body = {**USER, "model": "fast", "stream": True}
    response = await client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status == 200
    first = await response.content.readline()
    assert first.startswith(b"data: ")
    rewrite(tmp_path, group_file("ordered", [mock.base("tokens=2")]).replace("d0", "e0"))
    report = await client.app[RELOADER].reload()
    assert report.removed == ("d0",)
    assert old.running, "draining: its attempt still runs"
    rest = (await response.read()).decode()
    assert rest.rstrip().endswith("data: [DONE]"), rest[-200:]
    assert await served_by(client, "fast") == "e0"

    async def closed() -> bool:  # drained, closed, and its gauges gone
        return not old.running and "d0" not in system.metrics.providers

    await wait_until(closed)
    metrics = await (await client.get("/metrics")).text()
    assert 'modelrouter_provider_state{provider="d0"}' not in metrics, "its gauge went with it"
    assert 'modelrouter_provider_state{provider="e0"} 0.0' in metrics


async def test_a_broken_file_is_refused_with_its_lines_and_the_old_routing_stays(
    reloadable: Reloadable, mock: Mock, tmp_path: Path
) -> None:
    client = await reloadable(group_file("ordered", [mock.base()]))
    rewrite(
        tmp_path,
        """
        deployments:
          - name: d0
            kind: openai
            base_url: ftp://nowhere
            models: {fast: mock-model}
            weight: -1
        models:
          fast: {strategy: fastest}
        """,
    )
    with capture_logs() as logs, pytest.raises(Refused) as refused:
        await client.app[RELOADER].reload()
    path = str(tmp_path / "router.yaml")
    problems = refused.value.problems
    assert any(p.startswith(f"{path}:4:") and "base_url" in p for p in problems), problems
    assert any(p.startswith(f"{path}:6:") and "weight" in p for p in problems), problems
    assert any(p.startswith(f"{path}:8:") and "strategy" in p for p in problems), problems
    line = next(entry for entry in logs if entry["event"] == "reload_refused")
    assert line["log_level"] == "error"
    assert line["problems"] == problems
    assert await served_by(client, "fast") == "d0", "the old routing serves"
    metrics = await (await client.get("/metrics")).text()
    assert 'modelrouter_config_reloads_total{result="refused"} 1.0' in metrics


async def test_admin_reload_answers_what_changed_or_every_problem(
    reloadable: Reloadable, mock: Mock, tmp_path: Path
) -> None:
    client = await reloadable(group_file("ordered", [mock.base()]), ADMIN_API_KEY=ADMIN_KEY)
    response = await client.post("/admin/reload", headers=AUTH)
    assert response.status == 401, "a client key opens no /admin route"
    rewrite(tmp_path, group_file("ordered", [mock.base(), mock.base("tokens=2")]))
    response = await client.post("/admin/reload", headers=AS_ADMIN)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["status"] == "reloaded"
    assert body["deployments"]["added"] == ["d1"]
    rewrite(tmp_path, "deployments: []\n")
    response = await client.post("/admin/reload", headers=AS_ADMIN)
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["type"] == "invalid_routing_file"
    assert "router.yaml:1: deployments: the list is empty" in error["message"]
    assert error["request_id"] == response.headers["X-Request-ID"]
    assert len(client.app[RUNTIME].system.router.providers) == 2, "the old file's two stay"
    document = await (await client.get("/openapi.json")).json()
    reload = document["paths"]["/admin/reload"]["post"]
    assert set(reload["responses"]) >= {"200", "202", "401", "422"}
    assert reload["security"] == [{"admin": []}]


async def test_signals_during_a_reload_run_one_more_reload_after_it(
    reloadable: Reloadable, mock: Mock, tmp_path: Path
) -> None:
    client = await reloadable(group_file("ordered", [mock.base()]))
    reloader = client.app[RELOADER]
    read, load = asyncio.Event(), reloader.load

    def reading() -> Any:
        read.set()
        return load()

    reloader.load = reading
    rewrite(tmp_path, group_file("ordered", [mock.base(), mock.base("tokens=2")]))
    reloader.signalled()
    await read.wait()  # the first reload has read the file and is applying it
    for _ in range(4):
        reloader.signalled()  # four more while it runs: coalesced into one after it

    async def settled() -> bool:
        return not reloader.busy

    await wait_until(settled)
    assert reloader.count == 2
    assert list(client.app[RUNTIME].system.router.providers) == ["d0", "d1"]


async def test_sighup_reloads_and_a_workers_early_reload_signal_waits_until_it_serves(
    reloadable: Reloadable, mock: Mock, tmp_path: Path
) -> None:
    client = await reloadable(group_file("ordered", [mock.base()]))
    reloader = client.app[RELOADER]
    loop = asyncio.get_running_loop()
    rewrite(tmp_path, group_file("ordered", [mock.base(), mock.base("tokens=2")]))
    install_signals(reloader, worker=False)
    try:
        os.kill(os.getpid(), signal.SIGHUP)

        async def reloaded(count: int) -> bool:
            return reloader.count >= count and not reloader.busy

        await wait_until(lambda: reloaded(1))
        # A worker: SIGHUP is its parent's; a reload signal before it served is kept for later.
        previous = signal.getsignal(RELOAD_SIGNAL)
        try:
            early_signals(worker=True)
            os.kill(os.getpid(), RELOAD_SIGNAL)
            assert EARLY.told
            # (Here the running loop also heard that signal; a worker has no loop yet.)
            install_signals(reloader, worker=True)
            assert not EARLY.told
            await wait_until(lambda: reloaded(2))
            count = reloader.count
            os.kill(os.getpid(), signal.SIGHUP)  # passed on by the parent, not taken here
            os.kill(os.getpid(), RELOAD_SIGNAL)
            await wait_until(lambda: reloaded(count + 1))
            assert reloader.count == count + 1
        finally:
            loop.remove_signal_handler(RELOAD_SIGNAL)
            signal.signal(RELOAD_SIGNAL, previous)
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)


async def test_admin_reload_on_a_worker_checks_the_file_then_has_the_parent_reload_all(
    reloadable: Reloadable, mock: Mock, tmp_path: Path
) -> None:
    client = await reloadable(group_file("ordered", [mock.base()]), ADMIN_API_KEY=ADMIN_KEY)
    reloader = client.app[RELOADER]
    loop = asyncio.get_running_loop()
    reloader.parent = os.getpid()  # this process stands for the parent: its SIGHUP reloads
    install_signals(reloader, worker=False)
    try:
        rewrite(tmp_path, "deployments: []\n")
        response = await client.post("/admin/reload", headers=AS_ADMIN)
        assert response.status == 422, "refused by the worker: no signal sent"
        rewrite(tmp_path, group_file("ordered", [mock.base(), mock.base("tokens=2")]))
        response = await client.post("/admin/reload", headers=AS_ADMIN)
        assert response.status == 202
        assert await response.json() == {"status": "reloading", "workers": True}

        async def reloaded() -> bool:
            return reloader.count == 1 and not reloader.busy

        await wait_until(reloaded)
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
    assert list(client.app[RUNTIME].system.router.providers) == ["d0", "d1"]


def test_a_sighup_before_the_gateway_serves_is_kept_not_fatal() -> None:
    previous = signal.getsignal(signal.SIGHUP)
    try:
        early_signals(worker=False)
        os.kill(os.getpid(), signal.SIGHUP)
        assert EARLY.told, "noted: the reload runs once it serves (install_signals)"
    finally:
        EARLY.told = False
        signal.signal(signal.SIGHUP, previous)


async def test_a_reload_turns_a_groups_hedging_on_and_off_keeping_what_it_learnt(
    reloadable: Reloadable, mock: Mock, tmp_path: Path
) -> None:
    plain = group_file("ordered", [mock.base(), mock.base()])
    client = await reloadable(plain)
    system = client.app[RUNTIME].system
    assert system.hedging is None
    assert not system.router.special
    rewrite(tmp_path, plain.replace("{strategy: ordered}", "{strategy: ordered, hedge: on}"))
    await client.app[RELOADER].reload()
    hedging = system.hedging
    assert hedging is not None
    assert system.router.hedging is hedging
    assert system.router.special
    assert hedging.modes == {"fast": "on"}
    hedging.observe("d0", 0.2)
    rewrite(tmp_path, plain.replace("{strategy: ordered}", "{strategy: ordered, hedge: allow}"))
    await client.app[RELOADER].reload()
    assert system.hedging is not None
    assert system.hedging.modes == {"fast": "allow"}
    assert "d0" in system.hedging.first_bytes, "the learnt windows are kept"
    rewrite(tmp_path, plain)
    await client.app[RELOADER].reload()
    assert system.hedging is None
    assert system.router.hedging is None
    assert not system.router.special


async def test_a_reload_picks_up_a_deployments_tpm_and_a_tpm_refusal_returns_the_rpm(
    reloadable: Reloadable, mock: Mock, tmp_path: Path
) -> None:
    urls = [mock.base("tokens=2"), mock.base()]
    client = await reloadable(group_file("ordered", urls, rpm0="2", tpm0="1"))
    d0 = client.app[RUNTIME].system.router.providers["d0"]
    assert await served_by(client, "fast") == "d0", "its tpm of 1 is overdrawn by the usage"
    assert await served_by(client, "fast") == "d1", "refused by d0's tpm, its rpm given back"
    rewrite(tmp_path, group_file("ordered", urls, rpm0="2"))
    report = await client.app[RELOADER].reload()
    assert "d0" in report.retuned + report.kept
    assert client.app[RUNTIME].system.router.providers["d0"] is d0, "the same actor"
    assert await served_by(client, "fast") == "d0", "no tpm now; one request of its rpm left"
    assert await served_by(client, "fast") == "d1", "its rpm of 2 spent"
    assert await mock.count("tokens=2") == 2
