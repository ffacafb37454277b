"""The command line: check-config, serve (in-process and as a real process), mock-provider."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request

import aiohttp
import pytest

from modelrouter.cli import main
from modelrouter.config import load_settings
from modelrouter.web.server import serve
from tests.conftest import free_port


def clean_env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    keep.pop("API_KEY", None)
    keep.pop("REDIS_URL", None)
    return keep | extra


def test_check_config_prints_the_effective_configuration_with_secrets_masked(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "gsk_live_abcdefghijklmnop1234")
    monkeypatch.setenv("API_KEY", "client-secret-key-5678")
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2-secret@cache:6379/0")
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert [p["name"] for p in data["providers"]] == ["groq", "ollama"]
    assert data["providers"][0]["api_key"] == "***1234"
    for secret in ("gsk_live_abcdefghijklmnop", "client-secret-key", "hunter2-secret"):
        assert secret not in out
    assert data["state_backend"] == "redis"


def test_invalid_configuration_lists_every_problem_and_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROVIDER_TIMEOUT", "soon")
    monkeypatch.setenv("MAX_CONCURRENT_STREAMS", "0")
    monkeypatch.setenv("PROVIDER_ORDER", "groq,skynet")
    assert main(["check-config"]) == 2
    err = capsys.readouterr().err
    assert "PROVIDER_TIMEOUT='soon'" in err
    assert "MAX_CONCURRENT_STREAMS='0'" in err
    assert "unknown provider 'skynet'" in err


def test_serve_refuses_a_public_address_without_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("API_KEY", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--port", str(free_port())]) == 2


async def test_serve_answers_and_drains_on_stop() -> None:
    port = free_port()
    settings = load_settings({"PORT": str(port), "DRAIN_SECONDS": "0.2"})
    ready, stop = asyncio.Event(), asyncio.Event()
    server = asyncio.create_task(serve(settings, ready=ready, stop=stop))
    await asyncio.wait_for(ready.wait(), 5)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/ready") as response:
            assert response.status == 200
        stop.set()
        await asyncio.sleep(0.1)  # inside the drain window: still up, but not ready
        async with session.get(f"http://127.0.0.1:{port}/ready") as response:
            assert response.status == 503
            assert (await response.json())["reason"] == "draining"
    await asyncio.wait_for(server, 5)


def test_serve_starts_with_no_configuration_and_stops_on_sigterm() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "modelrouter", "serve", "--port", str(port)],
        env=clean_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        lines = []
        for line in process.stderr:
            lines.append(line)
            if '"listening"' in line:
                break
        log = "".join(lines)
        assert "auth_disabled" in log, "running without a key must be said loudly"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            health = json.loads(response.read())
        assert health["status"] == "ok"
        assert list(health["providers"]) == ["ollama"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_a_port_in_use_is_one_line_and_exit_1(workers: int) -> None:
    # --workers 2 needs a REDIS_URL; the parent finds the port taken before anything uses it.
    env = clean_env(REDIS_URL="redis://127.0.0.1:1/0") if workers > 1 else clean_env()
    command = [sys.executable, "-m", "modelrouter", "serve", "--workers", str(workers)]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*command, "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    ours = [line for line in done.stderr.splitlines() if line.startswith("modelrouter:")]
    assert ours == [f"modelrouter: cannot listen on 127.0.0.1:{port}: address already in use"]


def test_mock_provider_command_serves_requests() -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelrouter",
            "mock-provider",
            "--port",
            str(port),
            "--tokens",
            "3",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        assert "listening" in process.stderr.readline()
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            answer = json.loads(response.read())
        assert answer["usage"]["completion_tokens"] == 3
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
