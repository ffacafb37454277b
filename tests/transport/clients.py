"""The two clients the conformance suite compares: ours (modelrouter.transport) and aiohttp's.

Both keep connections alive between calls, both post the same body, and both report an
`Outcome`: the status and whole body, or a failure. The failure's kind is not compared (each
client names errors its own way); whether a client failed, and what the next request got, is.
"""

from __future__ import annotations

import ssl
from types import TracebackType
from typing import NamedTuple

import aiohttp

from modelrouter.transport import BadResponse, Pool, Proxy


class Outcome(NamedTuple):
    status: int
    body: bytes
    failure: str = ""  # empty when the request got an answer

    @property
    def failed(self) -> bool:
        return bool(self.failure)


def answer(status: int, body: bytes | str) -> Outcome:
    return Outcome(status, body.encode() if isinstance(body, str) else body)


def failed(reason: str) -> Outcome:
    return Outcome(0, b"", reason)


class Client:
    name = ""

    def __init__(self, *, tls: ssl.SSLContext | None = None, proxy: str | None = None) -> None:
        self.tls = tls
        self.proxy = proxy

    async def post(self, url: str, body: bytes = b"{}") -> Outcome:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class Ours(Client):
    name = "ours"

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.pools: dict[str, Pool] = {}

    def pool(self, url: str) -> Pool:
        if url not in self.pools:
            proxy = Proxy(self.proxy) if self.proxy else None
            self.pools[url] = Pool(url, ssl_context=self.tls, proxy=proxy)
        return self.pools[url]

    async def post(self, url: str, body: bytes = b"{}") -> Outcome:
        pool = self.pool(url)
        try:
            response = await pool.request(pool.header_block("POST", "", {}), body)
            try:
                return answer(response.status, await response.read())
            finally:
                response.release()
        except (BadResponse, OSError) as exc:
            return failed(f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        for pool in self.pools.values():
            await pool.close()


class Reference(Client):
    """aiohttp's client, as a well-kept reference."""

    name = "aiohttp"

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def post(self, url: str, body: bytes = b"{}") -> Outcome:
        try:
            async with self.session.post(
                url, data=body, ssl=self.tls if self.tls is not None else True, proxy=self.proxy
            ) as response:
                return answer(response.status, await response.read())
        except aiohttp.ClientError as exc:
            return failed(f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        await self.session.close()


CLIENTS: dict[str, type[Client]] = {"ours": Ours, "aiohttp": Reference}
