"""Reloading the routing file without a restart: SIGHUP, and `POST /admin/reload` (admin keys).

- The file is read and checked whole, as at start-up. A file with problems is refused: each
  problem is logged (`path:line: what`) and the running configuration stays.
- A good file replaces the deployments and model groups for the requests that arrive from now
  on; requests in flight finish on what they started with (modelrouter.actors.reconfigure).
- Reloads never overlap: a signal during a reload runs one more reload after it (of the file as
  it is then), however many signals came meanwhile.
- `serve --workers N`: a worker reloads on its parent's RELOAD_SIGNAL only (SIGHUP sent to the
  process group reaches the parent, which passes it on once); `POST /admin/reload` on a worker
  checks the file, then signals the parent, so that every worker reloads.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Final

import msgspec
import structlog
from aiohttp import web

from modelrouter.actors.system import Reloaded
from modelrouter.config import ConfigError, Settings
from modelrouter.errors import ApiError
from modelrouter.routing import load_settings
from modelrouter.schemas import json_encoder
from modelrouter.web.admin import require_admin
from modelrouter.web.runtime import METRICS, RUNTIME

log = structlog.get_logger("modelrouter.reload")
# parent -> worker: reload (a real-time signal: nothing else sends it, unlike SIGWINCH)
RELOAD_SIGNAL: Final = getattr(signal, "SIGRTMIN", signal.SIGWINCH) + 1
MAX_PROBLEMS: Final = 50  # in an answer; the log line has them all


class Refused(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} problem(s)")
        self.problems = problems


class ReloadOutcome(msgspec.Struct, frozen=True, omit_defaults=True):
    status: str  # reloaded | reloading (the workers were told)
    deployments: Reloaded | None = None
    workers: bool = False


class Reloader:
    """Owns the app's reloads. `load` reads the settings again (the environment the gateway
    started with, and the routing file as it is now)."""

    def __init__(self, app: web.Application, load: Callable[[], Settings]) -> None:
        self.app = app
        self.load = load
        self.parent: int | None = None  # serve --workers: the parent to tell
        self.count = 0  # reloads applied
        self._task: asyncio.Task[None] | None = None
        self._again = False

    @property
    def busy(self) -> bool:
        """A reload started by a signal is running."""
        return self._task is not None and not self._task.done()

    def signalled(self) -> None:
        """A reload signal: reload now, or once more after the running one."""
        if self.busy:
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        again = True
        while again:
            self._again = False
            try:
                await self.reload()
            except Refused:
                pass  # logged
            except Exception:  # a failed reload is logged; the next signal tries again
                log.exception("reload_failed")
            again = self._again

    def check(self) -> Settings:
        """The settings as they would be now; Refused with every problem (logged)."""
        try:
            return self.load()
        except ConfigError as exc:
            self.app[METRICS].config_reloads.labels("refused").inc()
            log.error(  # noqa: TRY400 - the problems are the message, not a traceback
                "reload_refused", problems=exc.problems, kept="the running configuration"
            )
            raise Refused(exc.problems) from None

    async def reload(self) -> Reloaded:
        settings = self.check()
        runtime = self.app[RUNTIME]
        report = await runtime.system.reload(settings)
        runtime.settings = settings  # /v1/models, /health read it
        self.count += 1
        runtime.metrics.config_reloads.labels("applied").inc()
        log.info("reloaded", **msgspec.structs.asdict(report))
        return report

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


RELOADER = web.AppKey("reloader", Reloader)


async def reloader_ctx(app: web.Application) -> AsyncIterator[None]:
    """Ends a reload still running before the actor system closes (add after `runtime_ctx`)."""
    yield
    await app[RELOADER].close()


def default_loader(env: Mapping[str, str] | None) -> Callable[[], Settings]:
    return lambda: load_settings(os.environ if env is None else env)


class _Early:
    """A worker's reload signal that came before it served (it may have read the file before
    the change): noted, and the reload runs once it serves. A signal is a process's fact."""

    def __init__(self) -> None:
        self.told = False

    def note(self, _signum: int, _frame: object) -> None:
        self.told = True


EARLY = _Early()


def install_signals(reloader: Reloader, *, worker: bool) -> None:
    """SIGHUP reloads; a worker of `serve --workers` reloads on its parent's RELOAD_SIGNAL
    only, and leaves SIGHUP to the parent (sent to the process group, it reaches both)."""
    loop = asyncio.get_running_loop()
    if worker:
        loop.add_signal_handler(signal.SIGHUP, _passed_on)
        loop.add_signal_handler(RELOAD_SIGNAL, reloader.signalled)
    else:
        loop.add_signal_handler(signal.SIGHUP, reloader.signalled)
    if EARLY.told:
        EARLY.told = False
        reloader.signalled()


def early_signals(*, worker: bool) -> None:
    """`serve`, from its first instruction until it serves: a reload signal is noted and the
    reload runs once it serves (the default action would end the process). A worker leaves
    SIGHUP to its parent and notes its parent's RELOAD_SIGNAL."""
    if not worker:
        signal.signal(signal.SIGHUP, EARLY.note)
        return
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(RELOAD_SIGNAL, EARLY.note)
    # Blocked by the parent since before this process was started (see workers.py): one
    # that came meanwhile is delivered now, to the handler above.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {RELOAD_SIGNAL})


def _passed_on() -> None:
    """SIGHUP to a worker: its parent gets it too and tells every worker once."""


async def admin_reload(request: web.Request) -> web.Response:
    """`POST /admin/reload`: 200 with what changed; 202 when the workers were told; 422 with
    every problem of a file that is refused."""
    require_admin(request)
    reloader = request.app[RELOADER]
    try:
        if reloader.parent is not None:
            reloader.check()  # refused here: no worker needs to read it
            os.kill(reloader.parent, signal.SIGHUP)
            outcome = ReloadOutcome("reloading", workers=True)
            return _json(outcome, status=202)
        outcome = ReloadOutcome("reloaded", await reloader.reload())
    except Refused as exc:
        shown = exc.problems[:MAX_PROBLEMS]
        more = len(exc.problems) - len(shown)
        text = "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
        raise ApiError(
            422,
            "invalid_routing_file",
            f"the routing file was refused, the running configuration stays: {text}",
            retryable=False,
        ) from None
    return _json(outcome)


def _json(data: object, *, status: int = 200) -> web.Response:
    return web.Response(
        body=json_encoder.encode(data), status=status, content_type="application/json"
    )
