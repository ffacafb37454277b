"""The transport seen through the gateway: what a client of /chat gets from odd upstreams."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

from structlog.testing import capture_logs

from tests.conftest import Gateway
from tests.transport.conftest import Serve
from tests.transport.servers import CONTINUE, Received, ScriptedServer, ok


def completion(text: str) -> bytes:
    return json.dumps(
        {
            "choices": [
                {"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()


def prompt(request: Received) -> str:
    content: str = json.loads(request.body)["messages"][0]["content"]
    return content


def echoing(server_box: list[ScriptedServer], *before: bytes | float):  # type: ignore[no-untyped-def]
    """Each request is answered with its own prompt, after `before` (interim responses...)."""

    def script(n: int) -> list[bytes | float | None]:
        text = prompt(server_box[0].received[n])
        return [*before, ok(completion(f"echo: {text}"), "Content-Type: application/json")]

    return script


async def echo_server(
    serve: Serve, *before: bytes | float, host: str = "127.0.0.1"
) -> ScriptedServer:
    box: list[ScriptedServer] = []
    server = await serve(echoing(box, *before), host=host)
    box.append(server)
    return server


def groq_at(url: str, **extra: str) -> dict[str, str]:
    return {
        "PROVIDER_ORDER": "groq",
        "GROQ_API_KEY": "gsk-test",
        "GROQ_BASE_URL": url,
        "GROQ_RATE_LIMIT": "0",
        **extra,
    }


async def chat(client: Any, text: str) -> tuple[int, dict[str, Any]]:
    response = await client.post("/chat", json={"messages": [{"role": "user", "content": text}]})
    return response.status, await response.json()


async def test_behind_100_continue_every_request_gets_its_own_answer(
    gateway: Gateway, serve: Serve
) -> None:
    server = await echo_server(serve, CONTINUE, 0.01)
    client = await gateway(**groq_at(server.url(path="/v1")))
    for n in range(3):
        status, body = await chat(client, f"question {n}")
        assert (status, body["text"]) == (200, f"echo: question {n}")
    answers = await asyncio.gather(*(chat(client, f"q{n}") for n in range(12)))
    assert [body["text"] for _, body in answers] == [f"echo: q{n}" for n in range(12)]


async def test_an_answer_ended_by_the_close_is_served(gateway: Gateway, serve: Serve) -> None:
    body = completion("closed")
    server = await serve(
        lambda n: [b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + body, None]
    )
    client = await gateway(**groq_at(server.url(path="/v1")))
    status, answer = await chat(client, "hi")
    assert (status, answer["text"]) == (200, "closed")


async def test_an_ipv6_base_url_works_and_sends_a_bracketed_host(
    gateway: Gateway, serve: Serve
) -> None:
    server = await echo_server(serve, host="::1")
    client = await gateway(**groq_at(f"http://[::1]:{server.port}/v1"))
    status, body = await chat(client, "over v6")
    assert (status, body["text"]) == (200, "echo: over v6")
    assert server.received[0].header("host") == f"[::1]:{server.port}"
    assert server.received[0].header("user-agent") == "modelrouter/0.1.0"


async def test_a_redirect_is_not_followed_and_says_where_it_pointed(
    gateway: Gateway, serve: Serve
) -> None:
    moved = ok("", "Location: https://elsewhere.example/v1/chat/completions", status="301 Moved")
    server = await serve(lambda n: [moved])
    client = await gateway(**groq_at(server.url(path="/v1")))
    with capture_logs() as logs:
        status, body = await chat(client, "hi")
    assert status == 502
    assert "redirect to elsewhere.example not followed" in body["error"]["message"]
    blacklisted = [e for e in logs if e["event"] == "provider_blacklisted"]
    assert "redirect to elsewhere.example not followed" in blacklisted[0]["detail"]
    assert blacklisted[0]["reason"] == "bad_response"
    assert len(server.received) == 1


async def test_a_body_over_the_bound_is_a_bad_response(gateway: Gateway, serve: Serve) -> None:
    big = completion("x" * 10_000)
    server = await serve(lambda n: [ok(big, "Content-Type: application/json")])
    client = await gateway(**groq_at(server.url(path="/v1"), MAX_UPSTREAM_BODY_BYTES="4096"))
    status, body = await chat(client, "hi")
    assert status == 502
    assert "groq: bad_response" in body["error"]["message"]
    assert "larger than 4096 bytes" in body["error"]["message"]


async def test_a_gzip_bomb_is_cut_at_the_bound_after_decompression(
    gateway: Gateway, serve: Serve
) -> None:
    bomb = gzip.compress(bytes(20 * 1024 * 1024), compresslevel=1)  # 20 MiB in ~90 KB
    server = await serve(lambda n: [ok(bomb, "Content-Encoding: gzip")])
    client = await gateway(**groq_at(server.url(path="/v1")))
    status, body = await chat(client, "hi")
    assert status == 502
    assert f"larger than {16 * 1024 * 1024} bytes" in body["error"]["message"]
