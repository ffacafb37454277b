"""A real forward proxy for the tests: tinyproxy (Debian package tinyproxy-bin), on loopback.

Each instance binds its outgoing connections to 127.0.0.2, so a test server that accepts only
that peer is reachable through the proxy and nowhere else.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from modelrouter.bench.procs import free_port, wait_listening

PROXY_PEER = "127.0.0.2"  # where the proxy's own connections come from
USER = "alice"
PASSWORD = "s3cret-Proxy_Pw.9"  # tinyproxy takes no "@" here; test_pool covers encoding


class Tinyproxy:
    def __init__(self, folder: Path, name: str, *, auth: bool = False, https_only: bool = False):
        binary = shutil.which("tinyproxy")
        if binary is None:
            raise RuntimeError(
                "tinyproxy is not installed: apt-get install tinyproxy-bin (.ci/run does)"
            )
        self.port = free_port()
        self.log = folder / f"{name}.log"
        lines = [
            f"Port {self.port}",
            "Listen 127.0.0.1",
            f"Bind {PROXY_PEER}",
            "Timeout 30",
            "MaxClients 64",
            "Allow 127.0.0.1",
            "LogLevel Info",
            f'LogFile "{self.log}"',
        ]
        if auth:
            lines.append(f"BasicAuth {USER} {PASSWORD}")
        if https_only:
            lines.append("ConnectPort 443")  # CONNECT to any other port: 403
        config = folder / f"{name}.conf"
        config.write_text("\n".join(lines) + "\n")
        self.process = subprocess.Popen(
            [binary, "-d", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_listening(self.port, timeout=10.0)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"tinyproxy did not start; config:\n{config.read_text()}") from None

    def url(self, *, user: str | None = None, password: str | None = None) -> str:
        if user is None:
            return f"http://127.0.0.1:{self.port}"
        from urllib.parse import quote

        return (
            f"http://{quote(user, safe='')}:{quote(password or '', safe='')}@127.0.0.1:{self.port}"
        )

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Proxies:
    """open: anyone, anywhere; guarded: Basic credentials needed; strict: CONNECT to 443 only."""

    def __init__(self, folder: Path) -> None:
        self.open = Tinyproxy(folder, "open")
        try:
            self.guarded = Tinyproxy(folder, "guarded", auth=True)
            try:
                self.strict = Tinyproxy(folder, "strict", https_only=True)
            except BaseException:
                self.guarded.stop()
                raise
        except BaseException:
            self.open.stop()  # none outlives a failed start
            raise

    @property
    def guarded_url(self) -> str:
        return self.guarded.url(user=USER, password=PASSWORD)

    def stop(self) -> None:
        for proxy in (self.open, self.guarded, self.strict):
            proxy.stop()
