"""Reading typed values from an environment mapping, every problem collected, not raised."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import TypeVar

from modelrouter.config.structs import LOOPBACK_NAMES

T = TypeVar("T")


class Reader:
    """Reads typed values from an environment, collecting every problem instead of stopping.

    It also notes every variable it was asked for, with the default it would use, so the
    documentation can be checked against the code (`variables`).
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []
        self.read: dict[str, object] = {}

    def raw(self, name: str, default: object = None) -> str | None:
        self.read.setdefault(name, default)
        value = self.env.get(name, "").strip()
        return value or None  # an empty variable counts as unset

    def get(self, name: str, default: T, parse: Callable[[str], T], rule: str = "") -> T:
        value = self.raw(name, default)
        if value is None:
            return default
        try:
            return parse(value)
        except ValueError:
            self.problems.append(f"{name}={value!r} is not {rule}")
            return default

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        return self.get(name, default, bounded(float, minimum), f"a number >= {minimum:g}")

    def seconds(self, name: str, default: float, *, minimum: float, maximum: float) -> float:
        """A finite duration: `inf` would make a bound (a timeout, a shutdown) never end."""
        rule = f"a number of seconds from {minimum:g} to {maximum:g}"
        return self.get(name, default, within(minimum, maximum), rule)

    def integer(self, name: str, default: int, *, minimum: int = 0) -> int:
        return self.get(name, default, bounded(int, minimum), f"an integer >= {minimum}")


def bounded(kind: Callable[[str], T], minimum: float) -> Callable[[str], T]:
    def parse(text: str) -> T:
        value = kind(text)
        if not value >= minimum:  # type: ignore[operator]
            raise ValueError(text)
        return value

    return parse


def within(minimum: float, maximum: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        if not minimum <= value <= maximum:  # NaN and inf fail here too
            raise ValueError(text)
        return value

    return parse


def split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def flag(text: str) -> bool:
    lowered = text.lower()
    if lowered not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError(text)
    return lowered in ("1", "true", "yes", "on")


def port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise ValueError(text)
    return value
