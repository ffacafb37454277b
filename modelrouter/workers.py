"""`modelrouter serve --workers N`: N processes sharing one port (SO_REUSEPORT).

Each worker is a fresh `python -m modelrouter serve` process (nothing is forked from a process
that already runs an event loop) bound with SO_REUSEPORT, so the kernel spreads connections
over them. They share limits, leases and health through Redis, which is why N > 1 needs
REDIS_URL. Metrics: PROMETHEUS_MULTIPROC_DIR is pointed at a fresh temporary directory, so
any worker's /metrics shows the sum over all of them.

This parent only supervises: it restarts a worker that dies (at most `max_restarts` within
`window` seconds, then it stops everything and exits 1) and forwards SIGTERM/SIGINT.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from types import FrameType

import structlog

from modelrouter.config import Settings
from modelrouter.observability.multiprocess import ENV as METRICS_DIR_ENV
from modelrouter.observability.multiprocess import mark_dead

log = structlog.get_logger("modelrouter.workers")


class WorkerPool:
    def __init__(
        self,
        command: list[str],
        env: dict[str, str],
        count: int,
        *,
        max_restarts: int = 5,
        window: float = 60.0,
        stop_timeout: float = 45.0,
        poll: float = 0.2,
    ) -> None:
        self.command = command
        self.env = env
        self.count = count
        self.max_restarts = max_restarts
        self.window = window
        self.stop_timeout = stop_timeout
        self.poll = poll
        self.procs: list[subprocess.Popen[bytes]] = []
        self._restarts: deque[float] = deque()
        self._stopping = False

    def _spawn(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(self.command, env=self.env)  # noqa: S603 - our own interpreter
        log.info("worker_started", pid=proc.pid)
        return proc

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        if self._stopping:  # a second signal: the workers end their drain at once too
            for proc in self.procs:
                if proc.poll() is None:
                    proc.send_signal(signum)
        self._stopping = True

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        self.procs = [self._spawn() for _ in range(self.count)]
        code = 0
        while not self._stopping:
            time.sleep(self.poll)
            if not self._replace_dead():
                code = 1
                break
        self._terminate()
        return code

    def _replace_dead(self) -> bool:
        """Restart exited workers; False when they die too often to go on."""
        for index, proc in enumerate(self.procs):
            if proc.poll() is None or self._stopping:
                continue
            mark_dead(proc.pid, self.env[METRICS_DIR_ENV])
            now = time.monotonic()
            while self._restarts and now - self._restarts[0] > self.window:
                self._restarts.popleft()
            if len(self._restarts) >= self.max_restarts:
                log.error("workers_failing", restarts=len(self._restarts), window=self.window)
                return False
            self._restarts.append(now)
            log.warning("worker_died", pid=proc.pid, exit_code=proc.returncode)
            self.procs[index] = self._spawn()
        return True

    def _terminate(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.info("workers_stopped")


def run_workers(settings: Settings, count: int) -> int:
    """Run `count` workers on settings.host:settings.port until SIGTERM/SIGINT."""
    with tempfile.TemporaryDirectory(prefix="modelrouter-metrics-") as metrics_dir:
        env = dict(os.environ) | {METRICS_DIR_ENV: metrics_dir}
        command = [sys.executable, "-m", "modelrouter", "serve", "--reuse-port"]
        command += ["--host", settings.host, "--port", str(settings.port)]
        # A worker ends within DRAIN_SECONDS + SHUTDOWN_TIMEOUT_SECONDS and its close grace.
        stop_timeout = settings.drain_seconds + settings.shutdown_timeout + 5.0
        pool = WorkerPool(command, env, count, stop_timeout=stop_timeout)
        with contextlib.suppress(KeyboardInterrupt):
            return pool.run()
        return 0
