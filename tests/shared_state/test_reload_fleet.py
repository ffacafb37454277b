"""Reloading the routing file in real gateway processes (`serve --workers 2`, Redis): SIGHUP to
the parent or to the whole process group, and `POST /admin/reload`, reload every worker exactly
once, and a load of 64 clients meanwhile sees no failed request."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import CLIENT_KEY, USER, Mock, wait_until
from tests.routing.support import write
from tests.shared_state.conftest import Fleet
from tests.shared_state.support import Replica, gateway_env
from tests.tenants.conftest import ADMIN_KEY, AS_ADMIN

pytestmark = pytest.mark.redis
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
CLIENTS = 64


def routing(*deployments: tuple[str, str]) -> str:
    lines = ["deployments:"]
    for name, url in deployments:
        lines += [f"  - name: {name}", "    kind: openai", f"    base_url: {url}"]
        lines += ["    models: {fast: mock-model}", "    rpm: 0"]
    return "\n".join([*lines, "models:", "  fast: {strategy: least-busy}", ""])


async def reloads(session: aiohttp.ClientSession, replica: Replica) -> float:
    async with session.get(f"{replica.url}/metrics") as response:
        text = await response.text()
    found = re.search(r'^modelrouter_config_reloads_total\{result="applied"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


async def load(
    session: aiohttp.ClientSession, replica: Replica, stop: asyncio.Event
) -> tuple[Counter[int], Counter[str]]:
    """One client: requests one after another (streams and whole answers) until `stop`."""
    statuses: Counter[int] = Counter()
    served: Counter[str] = Counter()
    turn = 0
    while not stop.is_set():
        turn += 1
        body = {**USER, "model": "fast", "stream": turn % 2 == 0}
        url = f"{replica.url}/v1/chat/completions"
        async with session.post(url, json=body, headers=AUTH) as response:
            text = await response.text()
            failed = response.status == 200 and "[DONE]" not in text and body["stream"]
            statuses[-1 if failed else response.status] += 1
            served[response.headers.get("x-modelrouter-provider", "?")] += 1
    return statuses, served


async def test_sighup_and_admin_reload_reach_every_worker_once_under_load(
    fleet: Fleet, mock: Mock, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    path = write(tmp_path / "router.yaml", routing(("d0", mock.base("tokens=4,token_delay=0.01"))))
    env = gateway_env(
        API_KEY=CLIENT_KEY,
        ADMIN_API_KEY=ADMIN_KEY,
        PROVIDER_ORDER="groq",
        REDIS_URL=redis_url,
        REDIS_KEY_PREFIX=prefix,
        MODELROUTER_CONFIG=path,
        MAX_CONCURRENT_STREAMS="200",
    )
    (replica,) = await fleet(env, workers=2, group=True)
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop = asyncio.Event()
        clients = [asyncio.create_task(load(session, replica, stop)) for _ in range(CLIENTS)]
        files = [
            routing(("d0", mock.base("tokens=4,token_delay=0.01")), ("d1", mock.base("tokens=3"))),
            routing(("d1", mock.base("tokens=3"))),
            routing(("d2", mock.base("tokens=2")), ("d1", mock.base("tokens=3"))),
        ]
        how = [
            lambda: os.kill(replica.proc.pid, signal.SIGHUP),  # the parent alone
            lambda: os.killpg(replica.proc.pid, signal.SIGHUP),  # the whole group
        ]
        expected = 0.0
        for index, text in enumerate(files):
            write(tmp_path / "router.yaml", text)
            if index < len(how):
                how[index]()
            else:
                async with session.post(f"{replica.url}/admin/reload", headers=AS_ADMIN) as r:
                    assert r.status == 202, await r.text()
            expected += 2  # each of the two workers, once

            async def reloaded(want: float = expected) -> bool:
                return await reloads(session, replica) >= want

            try:
                await wait_until(reloaded, timeout=10)
            except AssertionError:
                count = await reloads(session, replica)
                raise AssertionError(f"step {index}: {count} reloads: {replica.output()}") from None
            await asyncio.sleep(0.3)  # under load, while a second (wrong) reload could land
        stop.set()
        results = await asyncio.gather(*clients)
        assert await reloads(session, replica) == expected, "every worker reloaded exactly once"
        statuses = sum((s for s, _ in results), Counter[int]())
        served = sum((p for _, p in results), Counter[str]())
        assert set(statuses) == {200}, statuses
        assert sum(statuses.values()) > CLIENTS
        # The last file serves d2 and d1 only: both took requests after it.
        async with session.post(
            f"{replica.url}/v1/chat/completions", json={**USER, "model": "d2/fast"}, headers=AUTH
        ) as response:
            assert response.status == 200
        assert served["d1"] > 0, served
