"""`modelrouter serve --workers N`: N processes sharing one port (SO_REUSEPORT).

Each worker is a fresh `python -m modelrouter serve` process (nothing is forked from a process
that already runs an event loop) bound with SO_REUSEPORT, so the kernel spreads connections
over them. They share limits, leases and health through Redis, which is why N > 1 needs
REDIS_URL. Metrics: PROMETHEUS_MULTIPROC_DIR is pointed at a fresh temporary directory, so
any worker's /metrics shows the sum over all of them.

This parent only supervises: it restarts a worker that dies (at most `max_restarts` within
`window` seconds, then it stops everything and exits 1) and passes SIGTERM/SIGINT on, as
DRAIN_SIGNAL then HURRY_SIGNAL, and SIGHUP (reload the routing file) as RELOAD_SIGNAL. Not as
themselves: a signal sent to the whole process group (systemd's default, Ctrl-C in a
terminal) also reaches every worker itself, and a forwarded copy would be each worker's second
signal, which cuts its drain short (or reloads it twice). The two signals name a state,
not a count, so a worker told to drain twice still drains once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
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
from modelrouter.web.reload import RELOAD_SIGNAL
from modelrouter.web.server import listen_error

log = structlog.get_logger("modelrouter.workers")
DRAIN_SIGNAL = signal.SIGUSR1  # parent -> worker: start the graceful shutdown
HURRY_SIGNAL = signal.SIGUSR2  # parent -> worker: end the drain and the wait now


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

    def _stop(self, _signum: int, _frame: FrameType | None) -> None:
        """SIGTERM/SIGINT: the workers are told from here, at once (their /ready answers 503
        now, not after the next poll); the first signal drains, any later one hurries."""
        told = HURRY_SIGNAL if self._stopping else DRAIN_SIGNAL
        self._stopping = True
        self._tell(told)

    def _reload(self, _signum: int, _frame: FrameType | None) -> None:
        """SIGHUP: every worker reloads the routing file, once (a worker leaves SIGHUP to
        this parent, so one sent to the whole group is still one reload)."""
        if not self._stopping:
            log.info("reload_passed_on", workers=len(self.procs))
            self._tell(RELOAD_SIGNAL)

    def _tell(self, signum: int) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        signal.signal(signal.SIGHUP, self._reload)
        # Inherited by each worker (the mask survives exec): a reload passed on before the
        # worker can handle it waits, pending, instead of ending it (see web/reload.py).
        signal.pthread_sigmask(signal.SIG_BLOCK, {RELOAD_SIGNAL})
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
        self._tell(DRAIN_SIGNAL)  # again, or first when the workers keep dying: the same drain
        deadline = time.monotonic() + self.stop_timeout
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.info("workers_stopped")


def check_port(settings: Settings) -> None:
    """StartError now, once, when the workers could not listen (a port in use): not a failure
    in each worker, restarted until the pool gives up."""
    try:
        found = socket.getaddrinfo(
            settings.host, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        for family, kind, proto, _, address in found:
            with socket.socket(family, kind, proto) as probe:  # bound, never listening
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the workers
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                probe.bind(address)
    except OSError as exc:
        raise listen_error(settings, exc) from None


def run_workers(settings: Settings, count: int) -> int:
    """Run `count` workers on settings.host:settings.port until SIGTERM/SIGINT; StartError
    when they could not listen."""
    check_port(settings)
    with tempfile.TemporaryDirectory(prefix="modelrouter-metrics-") as metrics_dir:
        env = dict(os.environ) | {METRICS_DIR_ENV: metrics_dir}
        # --worker (hidden): SO_REUSEPORT, and the two signals above (cli.py).
        command = [sys.executable, "-m", "modelrouter", "serve", "--worker"]
        command += ["--host", settings.host, "--port", str(settings.port)]
        # A worker ends within DRAIN_SECONDS + SHUTDOWN_TIMEOUT_SECONDS and its close grace.
        stop_timeout = settings.drain_seconds + settings.shutdown_timeout + 5.0
        pool = WorkerPool(command, env, count, stop_timeout=stop_timeout)
        with contextlib.suppress(KeyboardInterrupt):
            return pool.run()
        return 0
