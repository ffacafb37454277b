"""Model aliases from `MODEL_ALIASES`: a short name for a fallback chain of provider/model targets.

    MODEL_ALIASES=fast=groq/llama-3.1-8b-instant,smart=openrouter/anthropic/claude-sonnet-4|groq

Aliases are separated by `,`; each is `name=chain`; a chain lists targets in the order they are
tried, separated by `|`; a target is `provider/model` (the model may itself contain `/` or `:`)
or a bare `provider`, meaning that provider's configured model. A request naming the alias in
`model` tries exactly that chain (only its first target with `"fallback": false`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Final

import msgspec

RESERVED: Final = frozenset({"auto"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


class AliasTarget(msgspec.Struct, frozen=True):
    provider: str
    model: str


class ModelAlias(msgspec.Struct, frozen=True):
    name: str
    targets: tuple[AliasTarget, ...]


def parse_aliases(
    text: str, *, known: Collection[str], models: Mapping[str, str]
) -> tuple[tuple[ModelAlias, ...], list[str]]:
    """Parse `MODEL_ALIASES`; `models` maps each enabled provider to its configured model.

    Returns the aliases and every problem found (an alias with a problem is left out).
    """
    aliases: dict[str, ModelAlias] = {}
    problems: list[str] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        name, sep, chain = (piece.strip() for piece in entry.partition("="))
        where = f"MODEL_ALIASES entry {entry!r}"
        if not sep or not chain:
            problems.append(f"{where} is not name=provider/model[|provider/model...]")
            continue
        if not _NAME.fullmatch(name) or name in RESERVED:
            problems.append(
                f"{where}: alias name {name!r} must be letters, digits and . _ : - "
                f"(no '/', at most 64 characters) and not one of {sorted(RESERVED)}"
            )
            continue
        if name in aliases:
            problems.append(f"{where}: alias {name!r} is defined twice")
            continue
        targets = [
            _target(where, part.strip(), known, models, problems) for part in chain.split("|")
        ]
        if all(target is not None for target in targets):
            aliases[name] = ModelAlias(name, tuple(t for t in targets if t is not None))
    return tuple(aliases.values()), problems


def _target(
    where: str, text: str, known: Collection[str], models: Mapping[str, str], problems: list[str]
) -> AliasTarget | None:
    provider, sep, model = text.partition("/")
    if not provider or (sep and not model):
        problems.append(f"{where}: target {text!r} is not provider/model or provider")
        return None
    if provider not in known:
        problems.append(
            f"{where}: target {text!r} names unknown provider {provider!r} "
            f"(known: {', '.join(known)})"
        )
        return None
    if provider not in models:
        problems.append(
            f"{where}: target {text!r} names provider {provider!r}, which is not enabled "
            f"(it must be in PROVIDER_ORDER and have {provider.upper()}_API_KEY if it needs one)"
        )
        return None
    return AliasTarget(provider, model or models[provider])
