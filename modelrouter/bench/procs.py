"""Child processes for the benchmark suite: start, wait until listening, sample, stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class PortTaken(RuntimeError):
    """Another process listens on the port the child was given (taken between `free_port`
    and the child's bind: other programs start servers on this machine too)."""


def wait_listening(
    port: int, *, timeout: float = 15.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Return once 127.0.0.1:`port` accepts connections; with `process`, once that process
    (or one of its descendants) is the one listening: PortTaken if it exits first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if process is not None and process.poll() is not None:
            raise PortTaken(f"the child exited ({process.returncode}) before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                if process is None or _listens(tree(process.pid), port):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def _listens(pids: list[int], port: int) -> bool:
    """Whether one of `pids` holds a socket listening on `port` (read from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as file:
                lines = file.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        folder = f"/proc/{pid}/fd"
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            try:
                if os.readlink(f"{folder}/{name}") in inodes:
                    return True
            except OSError:
                continue
    return False


@contextmanager
def child(
    args: list[str],
    port: int,
    env: dict[str, str] | None = None,
    *,
    module: str = "modelrouter",
) -> Iterator[int]:
    """Run `python -m <module> <args>` until the block ends, once it listens on `port`;
    yields its pid."""
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module, fixed arguments
        [sys.executable, "-m", module, *args],
        env={**os.environ, **(env or {})},
        # Another revision's code (PYTHONPATH) runs from its own root: `python -m` puts the
        # working directory first on sys.path, which from this tree would shadow it.
        cwd=(env or {}).get("PYTHONPATH"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port)
        yield process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tree(pid: int) -> list[int]:
    """`pid` and its descendants (a `serve --workers N` parent and its workers)."""
    found = [pid]
    for index in range(len(found) + 64):  # bounded walk
        if index >= len(found):
            break
        try:
            with open(f"/proc/{found[index]}/task/{found[index]}/children") as children:
                found.extend(int(child) for child in children.read().split())
        except OSError:
            continue
    return found


def _tree_sum(pid: int, name: str, parse: Callable[[str], float]) -> float:
    """`parse(/proc/<member>/<name>)` summed over `pid` and its descendants (gone ones skipped)."""
    total = 0.0
    for member in tree(pid):
        try:
            with open(f"/proc/{member}/{name}") as file:
                total += parse(file.read())
        except OSError:
            continue
    return total


def _rss(status: str) -> float:
    line = next((line for line in status.splitlines() if line.startswith("VmRSS:")), None)
    return int(line.split()[1]) * 1024 if line else 0  # kernel threads have no VmRSS


def _cpu(stat: str) -> float:
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory of the process and its children."""
    return int(_tree_sum(pid, "status", _rss))


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of the process and its children."""
    return _tree_sum(pid, "stat", _cpu)


class Sampler:
    """Peak RSS and CPU time of one process over a block (sampled every 50 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_rss = 0
        self.cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._cpu_start = cpu_seconds(self.pid)
        self.peak_rss = rss_bytes(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu = cpu_seconds(self.pid) - self._cpu_start

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_rss = max(self.peak_rss, rss_bytes(self.pid))
