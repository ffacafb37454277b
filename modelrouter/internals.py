"""Checking, at start-up, the private internals of dependencies that modelrouter relies on.

Two modules go beyond a dependency's public API, for reasons given where they do it:
`web/connections.py` extends aiohttp's connection protocol, and `state/wire.py` takes over the
transport of a connection that redis-py opened. pyproject.toml bounds both packages to the
minor releases that were tested. Should another release be installed anyway, `serve` stops
before it listens, with one line naming the package and its version; otherwise the first
request would fail instead (and a Redis wire that cannot connect sends the limits to local
state for good).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from importlib import metadata


class IncompatibleRelease(Exception):
    """An installed dependency lacks an internal that modelrouter relies on."""


def require(package: str, owner: object, names: Iterable[str]) -> None:
    """IncompatibleRelease unless `owner` (a class, or an instance for what __init__ sets) has
    every one of `names`."""
    for name in names:
        if not hasattr(owner, name):
            kind = owner if isinstance(owner, type) else type(owner)
            where = f"{kind.__module__}.{kind.__qualname__}.{name}"
            raise IncompatibleRelease(
                f"{package} {_installed(package)} is not supported: it has no {where}, which "
                f"modelrouter relies on (supported: {_supported(package)})"
            )


def _installed(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(version unknown)"


def _supported(package: str) -> str:
    """The requirement pyproject.toml gives, as installed (e.g. `aiohttp<3.15,>=3.13`)."""
    try:
        requirements = metadata.requires("modelrouter") or []
    except metadata.PackageNotFoundError:
        requirements = []
    for requirement in requirements:
        name = re.match(r"[A-Za-z0-9._-]+", requirement)
        if name is not None and name.group().lower() == package.lower():
            return requirement.split(";", 1)[0]
    return "see pyproject.toml"
