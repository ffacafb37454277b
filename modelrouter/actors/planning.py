"""The candidate order for one request: the named provider (and model) first, then the rest."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import msgspec

from modelrouter.schemas import ChatRequest

if TYPE_CHECKING:
    from modelrouter.actors.provider import ProviderActor


class PlanError(ValueError):
    pass


class Candidate(msgspec.Struct, frozen=True):
    actor: ProviderActor
    model: str


def split_model(model: str | None, known: Mapping[str, object]) -> tuple[str | None, str | None]:
    """`provider/model` names both; `auto` or nothing names neither; anything else is a model."""
    if model is None or model == "auto":
        return None, None
    head, sep, tail = model.partition("/")
    if sep and head in known and tail:
        return head, tail
    return None, model


def plan(
    request: ChatRequest, order: list[str], providers: Mapping[str, ProviderActor]
) -> list[Candidate]:
    provider, model = request.provider, request.model
    if model == "auto":
        model = None
    if provider is None:
        provider, model = split_model(model, providers)
    if provider is None:
        if model is not None:
            raise PlanError(
                f'model {model!r} needs a provider: set "provider" or use "provider/model"'
            )
        return [Candidate(providers[name], providers[name].provider.model) for name in order]
    if provider not in providers:
        enabled = ", ".join(order) or "none"
        raise PlanError(f"provider {provider!r} is unknown or not enabled (enabled: {enabled})")
    first = Candidate(providers[provider], model or providers[provider].provider.model)
    if not request.fallback:
        return [first]
    rest = [Candidate(providers[n], providers[n].provider.model) for n in order if n != provider]
    return [first, *rest]
