"""The routing file's YAML read as nodes (PyYAML's safe composer), so that every problem names
its line, and every problem is collected rather than raised: the file is checked whole.

`${VAR}` in a value takes the variable from the environment (a secret stays out of the file);
problems never quote a value that may hold one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Final, TypeVar

import yaml

T = TypeVar("T")
Node = yaml.Node
_VAR: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_CONSTRUCT: Final = yaml.constructor.SafeConstructor()
_STR: Final = "tag:yaml.org,2002:str"
_NULL: Final = "tag:yaml.org,2002:null"


class Source:
    """One routing file being read: its path (for the problems), the environment its
    `${VAR}`s come from, and the problems found so far."""

    def __init__(self, path: str, env: Mapping[str, str]) -> None:
        self.path = path
        self.env = env
        self._found: list[tuple[int, str]] = []
        self._other: list[str] = []  # about the file as a whole (it cannot be read...)

    @property
    def problems(self) -> list[str]:
        """Every problem, in the file's line order."""
        lines = sorted(self._found, key=lambda found: found[0])
        return self._other + [f"{self.path}:{line}: {message}" for line, message in lines]

    def problem(self, node: Node, message: str) -> None:
        self._found.append((node.start_mark.line + 1, message))

    def whole(self, message: str) -> None:
        """A problem of the whole file (no line)."""
        self._other.append(message)

    def fields(
        self, node: Node, what: str, *, allowed: frozenset[str], required: frozenset[str]
    ) -> dict[str, Node] | None:
        """A mapping whose keys are all known (each unknown one is a problem), with every
        required key present; None (and a problem) when it is not a mapping."""
        items = self.mapping(node, what)
        if items is None:
            return None
        for key, _value in items.values():
            if key.value not in allowed:
                known = ", ".join(sorted(allowed))
                self.problem(key, f"{what}: unknown key {key.value!r} (known: {known})")
        missing = sorted(required - set(items))
        if missing:
            self.problem(node, f"{what}: missing {', '.join(missing)}")
        return {name: value for name, (key, value) in items.items() if name in allowed}

    def mapping(self, node: Node, what: str) -> dict[str, tuple[Node, Node]] | None:
        """Key -> (key node, value node); a duplicate key is a problem (the safe loader would
        silently keep the last)."""
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, f"{what} must be a mapping (key: value)")
            return None
        items: dict[str, tuple[Node, Node]] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == _NULL:
                self.problem(key, f"{what}: a key must be a name")
                continue
            if key.value in items:
                self.problem(key, f"{what}: {key.value!r} is given twice")
                continue
            items[key.value] = (key, value)
        return items

    def sequence(self, node: Node, what: str) -> list[Node] | None:
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, f"{what} must be a list")
            return None
        return list(node.value)

    def text(self, node: Node, what: str, *, secret: bool = False) -> str | None:
        """A non-empty scalar as text, its `${VAR}`s replaced; `secret`: never quoted."""
        if not isinstance(node, yaml.ScalarNode) or node.tag == _NULL:
            self.problem(node, f"{what} must be a value")
            return None
        raw = str(node.value)
        value = self._substitute(node, what, raw)
        if value is None:
            return None
        if not value.strip():
            shown = "" if secret or raw == value else f" ({raw} is empty)"
            self.problem(node, f"{what} is empty{shown}")
            return None
        return value

    def _substitute(self, node: Node, what: str, raw: str) -> str | None:
        missing = [name for name in _VAR.findall(raw) if not self.env.get(name, "").strip()]
        if missing:
            names = ", ".join(f"${{{name}}}" for name in dict.fromkeys(missing))
            self.problem(node, f"{what}: {names} not set in the environment")
            return None
        return _VAR.sub(lambda match: self.env[match.group(1)].strip(), raw)

    def value(self, node: Node, what: str, parse: Callable[[object], T], rule: str) -> T | None:
        """A scalar read as YAML reads it (a `${VAR}` as the text it becomes), then `parse`d;
        a ValueError or TypeError from `parse` is a problem saying `rule`."""
        if not isinstance(node, yaml.ScalarNode):
            self.problem(node, f"{what} must be {rule}")
            return None
        raw: object = _CONSTRUCT.construct_object(node)
        if node.tag == _STR and _VAR.search(str(raw)):
            raw = self._substitute(node, what, str(raw))
            if raw is None:
                return None
            raw = _scalar(str(raw))
        try:
            return parse(raw)
        except (ValueError, TypeError):
            self.problem(node, f"{what} must be {rule}")
            return None


def _scalar(text: str) -> object:
    """A `${VAR}`'s value read as YAML reads a scalar (`30` a number, `false` a flag)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # then `parse` says what it wanted


def integer(minimum: int) -> Callable[[object], int]:
    def parse(raw: object) -> int:
        if type(raw) is not int or raw < minimum:
            raise ValueError(raw)
        return raw

    return parse


def number(minimum: float, maximum: float, *, above: bool = False) -> Callable[[object], float]:
    """A finite number in [minimum, maximum] ((minimum, maximum] when `above`)."""

    def parse(raw: object) -> float:
        if not isinstance(raw, int | float) or isinstance(raw, bool):
            raise TypeError(raw)
        value = float(raw)
        low_ok = value > minimum if above else value >= minimum
        if not (math.isfinite(value) and low_ok and value <= maximum):
            raise ValueError(raw)
        return value

    return parse


def boolean(raw: object) -> bool:
    if type(raw) is not bool:
        raise TypeError(raw)
    return raw
