"""The system's nginx, run unprivileged on a free loopback port with deploy/nginx/modelrouter.conf.

The repository's file is used as it is, except for what only a deployment knows: the `server`
lines of `upstream modelrouter` (the replicas' addresses) and the `listen` port.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.conftest import free_port
from tests.shared_state.support import port_open

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "deploy" / "nginx" / "modelrouter.conf"
UNPRIVILEGED = "nobody"
_SERVER = re.compile(r"(\s*)server \S+( [^;]*)?;")
_LISTEN = re.compile(r"(\s*)listen \d+;")

MAIN = """\
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log stderr notice;
events {{
    worker_connections 1024;
}}
http {{
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/modelrouter.conf;
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if found is None:
        raise RuntimeError("nginx is not installed: apt-get install -y nginx (.ci/run does)")
    return found


def render(conf: str, upstreams: list[str], port: int) -> str:
    """The repository's conf with these replica addresses and this listen port."""
    out: list[str] = []
    in_upstream = False
    servers = listens = 0
    for line in conf.splitlines(keepends=True):
        stripped = line.strip()
        if stripped == "upstream modelrouter {":
            in_upstream = True
        elif in_upstream and stripped == "}":
            in_upstream = False
        server = _SERVER.fullmatch(line.rstrip("\n")) if in_upstream else None
        listen = _LISTEN.fullmatch(line.rstrip("\n"))
        if server is not None:
            servers += 1
            if servers == 1:  # every replica gets the options of the first server line
                indent, options = server.group(1), server.group(2) or ""
                out.extend(f"{indent}server {address}{options};\n" for address in upstreams)
        elif listen is not None:
            listens += 1
            out.append(f"{listen.group(1)}listen 127.0.0.1:{port};\n")
        else:
            out.append(line)
    assert servers >= 1, "deploy/nginx/modelrouter.conf: no server line in upstream modelrouter"
    assert listens == 1, "deploy/nginx/modelrouter.conf: expected exactly one `listen <port>;`"
    return "".join(out)


class Nginx:
    """nginx in front of `upstreams`, as an unprivileged process; its access log is kept."""

    def __init__(self, upstreams: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="modelrouter-e2e-nginx-"))
        (self.dir / "modelrouter.conf").write_text(render(CONF.read_text(), upstreams, self.port))
        (self.dir / "nginx.conf").write_text(MAIN.format(dir=self.dir))
        self.access_log = self.dir / "access.log"
        self.error_log = self.dir / "error.log"
        self.access_log.touch()
        self.error_log.touch()
        user = self._drop_to()
        if user is not None:
            for path in (self.dir, *self.dir.iterdir()):
                os.chown(path, user.pw_uid, user.pw_gid)
        # -e: builds whose default error log is a file under /var/log stay quiet unprivileged.
        command = [nginx_binary(), "-e", "stderr", "-p", str(self.dir), "-c", "nginx.conf"]
        with self.access_log.open("ab") as out, self.error_log.open("ab") as err:
            self.proc = subprocess.Popen(
                command,
                stdout=out,
                stderr=err,
                user=user.pw_uid if user else None,
                group=user.pw_gid if user else None,
                extra_groups=[] if user else None,
            )
        self._wait_listening()

    @staticmethod
    def _drop_to() -> pwd.struct_passwd | None:
        """nginx never runs as root here: as root, start it as `nobody`."""
        return pwd.getpwnam(UNPRIVILEGED) if os.geteuid() == 0 else None

    def _wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited {self.proc.returncode}: {self.errors()}")
            if port_open(self.port):
                return
            time.sleep(0.02)
        raise RuntimeError(f"nginx is not listening: {self.errors()}")

    def errors(self) -> str:
        return self.error_log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish what is in flight
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
