"""A reload of the routing file in a running actor system: which actors survive, and the drain
of what the new configuration no longer uses.

- A deployment kept by name with the same kind, base URL and key keeps its actor: its health,
  its rate budget (the same key), its latency averages, its tickets. When any other of its
  settings changed, the actor is retuned with a fresh upstream (adapter and pool); attempts
  already running finish on the upstream they started with.
- Any other deployment of the new file gets a new actor; one no longer declared (or declared
  with another kind, URL or key) is retired: new requests no longer plan it, and it is closed
  once the attempts it was running have ended.
- What a retired actor or upstream held (its pool, the secrets only it used) is let go after
  that drain, bounded by MAX_OPERATION_TIMEOUT: no request can outlive its deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import msgspec
import structlog

from modelrouter.actors.provider import ProviderActor
from modelrouter.config import ProviderSettings, Settings
from modelrouter.transport import Pool

log = structlog.get_logger("modelrouter.reload")
POLL: Final = 0.05  # how often a drain looks at its attempts (off the request path)


class Reloaded(msgspec.Struct, frozen=True):
    """What a reload did to the deployments, by name."""

    kept: tuple[str, ...]  # the same actor, the same settings
    retuned: tuple[str, ...]  # the same actor (health, budget), new settings
    added: tuple[str, ...]
    removed: tuple[str, ...]  # drained, then closed


def same_endpoint(old: ProviderSettings, new: ProviderSettings) -> bool:
    """The same upstream account: its health and budget carry over."""
    return old.kind == new.kind and old.base_url == new.base_url and old.api_key == new.api_key


def timed_deployments(settings: Settings) -> frozenset[str]:
    """The deployments some `latency` group ranks: only their attempts are timed."""
    return _ranked(settings, {"latency"})


def fleet_deployments(settings: Settings) -> frozenset[str]:
    """The deployments whose numbers the fleet shares (with Redis: routing/fleet.py)."""
    return _ranked(settings, {"latency", "least-busy"})


def _ranked(settings: Settings, strategies: set[str]) -> frozenset[str]:
    groups = {g.name for g in settings.model_groups if g.strategy in strategies}
    return frozenset(p.name for p in settings.providers if groups.intersection(p.models))


class Plan(msgspec.Struct):
    """The actors of the new configuration (in its order), and what must drain."""

    actors: list[ProviderActor]
    retired: list[ProviderActor]  # to close after their attempts end
    pools: list[Pool]  # old pools of retuned actors: to close after their attempts end
    marks: list[tuple[ProviderActor, int]]  # every attempt to wait for
    report: Reloaded


def plan_reload(
    current: Mapping[str, ProviderActor],
    settings: Settings,
    *,
    build: Callable[[ProviderSettings, bool], ProviderActor],
    retune: Callable[[ProviderActor, ProviderSettings], Pool],
    timed: frozenset[str],
) -> Plan:
    """Match the new settings' deployments to the running actors. `build` makes a new actor
    (fresh: its name had another endpoint);
    `retune` gives a kept actor its new settings and returns the pool it used before."""
    actors: list[ProviderActor] = []
    names: dict[str, list[str]] = {"kept": [], "retuned": [], "added": []}
    pools: list[Pool] = []
    marks: list[tuple[ProviderActor, int]] = []
    for provider in settings.providers:
        actor = current.get(provider.name)
        if actor is None or not same_endpoint(actor.provider, provider):
            # A name given another endpoint starts healthy: its record was the old one's.
            actor = build(provider, actor is not None)
            names["added"].append(provider.name)
        elif actor.provider != provider:
            marks.append((actor, actor.mark()))
            pools.append(retune(actor, provider))
            names["retuned"].append(provider.name)
        else:
            actor.upstream.timed = provider.name in timed  # a group's strategy may have changed
            names["kept"].append(provider.name)
        actors.append(actor)
    kept = {id(actor) for actor in actors}
    retired = [actor for actor in current.values() if id(actor) not in kept]
    marks += [(actor, actor.mark()) for actor in retired]
    report = Reloaded(
        kept=tuple(names["kept"]),
        retuned=tuple(names["retuned"]),
        added=tuple(names["added"]),
        removed=tuple(actor.name for actor in retired),
    )
    return Plan(actors, retired, pools, marks, report)


async def drain(
    marks: Sequence[tuple[ProviderActor, int]],
    *,
    timeout: float,
) -> None:
    """Wait (at most `timeout` seconds) until each attempt running at its mark has ended."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    waiting = [(actor, mark) for actor, mark in marks if not actor.ended_since(mark)]
    while waiting and loop.time() < end:
        await asyncio.sleep(POLL)
        waiting = [(actor, mark) for actor, mark in waiting if not actor.ended_since(mark)]
    if waiting:
        log.warning("reload_drain_timeout", deployments=sorted({a.name for a, _ in waiting}))
