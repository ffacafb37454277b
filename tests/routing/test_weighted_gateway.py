"""`weighted` behind a live gateway: 2,000 requests over two mock deployments weighted 3:1."""

from __future__ import annotations

import asyncio
from collections import Counter

from tests.conftest import Mock
from tests.routing.support import FileGateway
from tests.routing.test_gateway import group_file, served_by

REQUESTS = 2000


async def test_weighted_three_to_one_over_2000_requests_is_75_25_within_5_points(
    file_gateway: FileGateway, mock: Mock
) -> None:
    text = group_file("weighted", [mock.base("tokens=1"), mock.base("tokens=2")])
    text = text.replace("    rpm: 0\n", "    rpm: 0\n    weight: 3\n", 1)
    client = await file_gateway(text)
    gate = asyncio.Semaphore(32)

    async def one() -> str:
        async with gate:
            return await served_by(client, "fast")

    served = Counter(await asyncio.gather(*(one() for _ in range(REQUESTS))))
    assert sum(served.values()) == REQUESTS
    assert abs(served["d0"] / REQUESTS - 0.75) <= 0.05, served
    assert await mock.count("tokens=1") == served["d0"], "every answer came from where it says"
