"""What the HTTP handlers reach through the app: one typed key, created in `cleanup_ctx`."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import msgspec
from aiohttp import web

from modelrouter.actors.system import ActorSystem
from modelrouter.config import Settings, is_loopback
from modelrouter.events import Answering, Usage
from modelrouter.observability import Metrics
from modelrouter.observability.recent import Recent
from modelrouter.routing.hedging import Hints
from modelrouter.schemas import ChatRequest
from modelrouter.state.ledger_redis import ledger_for
from modelrouter.tenants.cost import Charge, Pricing
from modelrouter.tenants.gate import Admission, BudgetGate
from modelrouter.tenants.identity import Identity
from modelrouter.tenants.limits import KeyLimits
from modelrouter.tenants.lookup import KeyResolver
from modelrouter.tenants.spend import SpendLog

HOLD_MARGIN = 60.0  # seconds a budget's hold outlives its request's deadline
ANONYMOUS = "anonymous"  # the client of every request when API_KEY is unset


class Runtime(msgspec.Struct, kw_only=True):
    loop: asyncio.AbstractEventLoop
    settings: Settings
    metrics: Metrics
    system: ActorSystem
    pricing: Pricing
    api_keys: tuple[bytes, ...] = ()
    # Each key's id (a hash, never the key) in `api_keys` order, then ANONYMOUS: indexed by
    # what `check_auth` returns (-1 when auth is off).
    key_ids: tuple[str, ...] = (ANONYMOUS,)
    identities: tuple[Identity, ...] = (Identity(ANONYMOUS),)  # as `key_ids`, for `authenticate`
    resolver: KeyResolver | None = None  # virtual keys (DATABASE_URL), see web.auth
    key_limits: KeyLimits | None = None  # virtual keys' rpm, tpm and streams
    budgets: BudgetGate | None = None  # virtual keys' budgets (DATABASE_URL), see web.budget
    # No API_KEY, on loopback: a request without a key passes while no virtual key exists.
    open_without_key: bool = False
    cache_scope: str = "key"  # CACHE_SCOPE
    cache: bool = False  # CACHE_MODE is on: read each request's cache policy
    capture: bool = False  # history keeps content: note each request's messages and answer
    # Some stream may hedge or be continued: note each stream's hints (routing.hedging).
    hints: bool = False


class Summary:
    """What a handler learned about its request, for the request's end line and metrics."""

    __slots__ = (
        "admission",
        "answering",
        "budget_left",
        "cache",
        "chat",
        "client",
        "cost",
        "error",
        "first_byte",
        "hints",
        "identity",
        "relayed",
        "started",
        "text",
        "usage",
    )

    def __init__(self, started: float) -> None:
        self.started = started  # time.perf_counter() when the request arrived
        self.answering: Answering | None = None  # the last provider, model and attempt tried
        self.usage: Usage | None = None
        self.error: str | None = None  # the error type, also when a started stream was cut
        self.client = ANONYMOUS  # the client key's id (`identity.client_id`)
        self.identity: Identity | None = None  # set by `web.auth.authenticate`
        self.cache: str | None = None  # hit, miss or bypass, when the cache is on
        self.first_byte: float | None = None  # seconds to a stream's first byte
        self.chat: ChatRequest | None = None  # with history content on: the request...
        self.text: list[str] | None = None  # ...and the answer's text
        self.cost: Charge | None = None  # set once, where the request ends (web.answers)
        self.admission: Admission | None = None  # a budgeted key's hold, until settled
        self.budget_left: int | None = None  # nano-dollars of its budget left after the settle
        self.relayed = 0  # characters of text a stream relayed (its usage's estimate, if need be)
        self.hints: Hints | None = None  # what routing was asked and did (hedging configured)


RUNTIME = web.AppKey("runtime", Runtime)
REQUEST_ID = web.RequestKey("request_id", str)
SUMMARY = web.RequestKey("summary", Summary)
SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
RECENT = web.AppKey("recent", Recent)  # this replica's last hour, for the console
RESOLVER = web.AppKey("resolver", KeyResolver)
SPEND = web.AppKey("spend", SpendLog)


def key_id(key: str) -> str:
    """A client key's id in the history: a hash, computed once per key."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def budget_gate(app: web.Application, system: ActorSystem, pricing: Pricing) -> BudgetGate | None:
    """Budgets, where keys can have them (DATABASE_URL): in the system's shared state."""
    settings = app[SETTINGS]
    if settings.database_url is None:
        return None
    return BudgetGate(
        ledger_for(system.state),
        pricing,
        chain=system.chain,
        settings=settings.tenants,
        spend=app.get(SPEND),
        # A hold outlives its request (bounded by the deadline) by a margin; then it expires.
        ttl=settings.max_operation_timeout + HOLD_MARGIN,
    )


async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
    """Start the actor system for the app's lifetime; close it at cleanup."""
    settings, metrics = app[SETTINGS], app[METRICS]
    recent = app.get(RECENT) if settings.tenants.admin_keys else None  # see create_app
    system = ActorSystem(settings, metrics, recent=recent)
    await system.start()
    pricing = system.pricing  # one table for the requests' cost and the attempt spans'
    resolver = app.get(RESOLVER)
    budgets = budget_gate(app, system, pricing)
    key_limits = None
    if resolver is not None:
        key_limits = KeyLimits(
            system.state,
            lease_ttl=settings.stream_lease_ttl,
            renew_every=settings.stream_lease_renew,
            default_output=settings.tenants.budget_reserve_tokens,
            budgets=budgets,
        )
    app[RUNTIME] = Runtime(
        loop=asyncio.get_running_loop(),
        settings=settings,
        metrics=metrics,
        system=system,
        pricing=pricing,
        api_keys=tuple(k.encode() for k in settings.api_keys),
        key_ids=(*(key_id(k) for k in settings.api_keys), ANONYMOUS),
        identities=(*(Identity(key_id(k)) for k in settings.api_keys), Identity(ANONYMOUS)),
        resolver=resolver,
        key_limits=key_limits,
        open_without_key=not settings.api_keys and is_loopback(settings.host),
        budgets=budgets,
        cache=settings.cache.enabled,
        cache_scope=settings.cache.scope,
        capture=settings.database_url is not None and settings.history.store_content,
        hints=system.hedging is not None or settings.continue_on_cut != "off",
    )
    try:
        yield
    finally:
        if key_limits is not None:  # before the state closes: the settles still owed
            await key_limits.close()
        await system.close()
