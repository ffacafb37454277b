"""`modelrouter keys create|list|show|revoke|rotate`: the key store from the command line, for
bootstrap and scripts, on DATABASE_URL (the same store and rules as `/admin/keys`).

Each prints JSON on stdout: the key as `/admin/keys` shows it (a created or rotated key's
secret included, that once). Errors go to stderr: exit 1 when the store refused or could not
be reached, 2 for a bad argument or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

import msgspec
import structlog

from modelrouter.config import ConfigError, Settings, load_settings, secrets_of
from modelrouter.observability import configure_logging
from modelrouter.state.connect import connect
from modelrouter.tenants.keys import MAX_GRACE_SECONDS, KeyPage, NewKey
from modelrouter.tenants.push import channel_of, publish
from modelrouter.tenants.rows import BadCursor
from modelrouter.tenants.store import (
    DB_ERRORS,
    MAX_LIMIT,
    BadKey,
    KeyChange,
    KeyRevoked,
    KeyStore,
    NameTaken,
)

_SETTINGS = (  # create's options, as NewKey's fields
    ("team", str),
    ("rpm", int),
    ("tpm", int),
    ("max_parallel_streams", int),
    ("budget_usd", float),
    ("budget_period", str),
    ("expires_at", str),
)


class Refused(Exception):
    """The store said no (exit 1)."""


def _bounded(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {low} to {high}")
        return value

    return parse


def add_keys_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key and print it with its secret")
    create.add_argument("--name", required=True)
    for name, kind in _SETTINGS:
        create.add_argument(f"--{name.replace('_', '-')}", type=kind)
    create.add_argument(
        "--model",
        action="append",
        dest="models",
        help="a model, provider/model, alias or * pattern it may use (repeat; none: all)",
    )
    create.add_argument("--metadata", help="a JSON object (4 KB at most)")
    create.add_argument("--disabled", action="store_true")
    listing = actions.add_parser("list", help="list keys, newest first (never a secret)")
    listing.add_argument("--limit", type=_bounded(1, MAX_LIMIT), default=50)
    listing.add_argument("--cursor")
    listing.add_argument("--team")
    for action, text in (("show", "print a key"), ("revoke", "revoke a key (its row stays)")):
        one = actions.add_parser(action, help=text)
        one.add_argument("key", help="the key's id or name")
    rotate = actions.add_parser("rotate", help="give a key a new secret and print it")
    rotate.add_argument("key", help="the key's id or name")
    rotate.add_argument(
        "--grace-seconds",
        type=_bounded(0, MAX_GRACE_SECONDS),
        default=0,
        metavar="SECONDS",
        help="the old secret keeps working this long (default 0)",
    )


def _new_key(args: argparse.Namespace) -> NewKey:
    """The options as the admin API's body, validated by the same type."""
    body: dict[str, Any] = {"name": args.name, "disabled": args.disabled}
    body |= {name: getattr(args, name) for name, _ in _SETTINGS if getattr(args, name) is not None}
    if args.models:
        body["models"] = args.models
    if args.metadata is not None:
        body["metadata"] = msgspec.json.decode(args.metadata)
    return msgspec.json.decode(msgspec.json.encode(body), type=NewKey)


async def _act(store: KeyStore, args: argparse.Namespace) -> Any:
    now = datetime.now(UTC)
    if args.action == "create":
        key, secret = await store.create(_new_key(args))
        return key.created(secret, now)
    if args.action == "list":
        keys, cursor = await store.page(limit=args.limit, cursor=args.cursor, team=args.team)
        return KeyPage(data=[key.info(now) for key in keys], next_cursor=cursor)
    found = await store.find(args.key)
    if found is None:
        raise Refused(f"no key {args.key!r}")
    if args.action == "show":
        return found.info(now)
    if args.action == "revoke":
        revoked = await store.revoke(found.id)
        assert revoked is not None  # keys are never deleted
        return revoked.info(now)
    rotated = await store.rotate(found.id, grace_seconds=args.grace_seconds)
    assert rotated is not None
    key, secret = rotated
    return key.created(secret, now)


async def _run(settings: Settings, args: argparse.Namespace) -> Any:
    assert settings.database_url is not None
    client = None
    on_change = None
    if settings.redis_url is not None:  # running replicas hear the change as the API's
        client = connect(settings.redis_url, settings.redis, name="modelrouter:keys-command")
        channel = channel_of(settings.redis.key_prefix)

        async def on_change(change: KeyChange) -> None:
            await publish(client, channel, change)

    store = KeyStore.from_url(settings.database_url, pool_size=1, on_change=on_change)
    await store.start()
    try:
        return await _act(store, args)
    finally:
        await store.close()
        if client is not None:
            await client.aclose()


def run_keys(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"modelrouter: {exc}", file=sys.stderr)
        return 2
    if settings.database_url is None:
        print("modelrouter: keys live in PostgreSQL: set DATABASE_URL", file=sys.stderr)
        return 2
    if not structlog.is_configured():  # (already, when called from a running program)
        # Log lines (a migration, a warning) go to stderr: stdout is the JSON a script reads.
        configure_logging(level="WARNING", fmt=settings.log_format, secrets=secrets_of(settings))
    try:
        result = asyncio.run(_run(settings, args))
    except (msgspec.DecodeError, BadKey, BadCursor) as exc:  # ValidationError included
        print(f"modelrouter: invalid key settings: {exc}", file=sys.stderr)
        return 2
    except (Refused, NameTaken, KeyRevoked) as exc:
        print(f"modelrouter: {exc}", file=sys.stderr)
        return 1
    except DB_ERRORS as exc:
        print(f"modelrouter: the keys database is not answering ({exc!r})", file=sys.stderr)
        return 1
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(result)).decode() + "\n")
    return 0
