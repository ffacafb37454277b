"""The candidate order for one request, chosen by its `model` (and `provider`) fields.

- `auto` or nothing: the configured provider order.
- an alias (`MODEL_ALIASES`): exactly its chain of provider/model targets (its first target
  alone with `"fallback": false`).
- `provider/model`, or the `provider` field: that provider first with that model (or its
  configured one), then the rest of the order; with `"fallback": false`, that provider alone.
- a bare model equal to providers' configured model: those providers first, then the rest.

Candidates whose adapter cannot honour every parameter the request sets are left out, so a
parameter is never silently dropped; if the provider the request names is one of them, or no
candidate is left, planning fails with the parameter named.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import msgspec

from modelrouter.aliases import ModelAlias
from modelrouter.config import KNOWN_PROVIDERS
from modelrouter.providers import requested_features
from modelrouter.schemas import ChatRequest

if TYPE_CHECKING:
    from modelrouter.actors.provider import ProviderActor


class PlanError(ValueError):
    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        type_: str = "invalid_request",
        status: int = 400,
    ) -> None:
        super().__init__(message)
        self.param = param
        self.type = type_
        self.status = status


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
    request: ChatRequest,
    order: list[str],
    providers: Mapping[str, ProviderActor],
    aliases: Mapping[str, ModelAlias] | None = None,
) -> list[Candidate]:
    candidates, named = _candidates(request, order, providers, aliases or {})
    return _capable(request, candidates, named=named)


def _candidates(
    request: ChatRequest,
    order: list[str],
    providers: Mapping[str, ProviderActor],
    aliases: Mapping[str, ModelAlias],
) -> tuple[list[Candidate], bool]:
    """The candidates, and whether the first is the provider the request named."""
    provider, model = request.provider, request.model
    if model == "auto":
        model = None
    if provider is None and model is not None:
        alias = aliases.get(model)
        if alias is not None:
            targets = [t for t in alias.targets if t.provider in providers]
            if not request.fallback:
                targets = targets[:1]
            return [Candidate(providers[t.provider], t.model) for t in targets], False
        provider, model = split_model(model, KNOWN_PROVIDERS)
        if provider is None:
            return _serving(model, order, providers), False
    if provider is None:
        return [_default(providers[name]) for name in order], False
    if provider not in providers:
        enabled = ", ".join(order) or "none"
        if request.provider is not None:  # the `provider` field names it
            raise PlanError(
                f"provider {provider!r} is unknown or not enabled (enabled: {enabled})",
                param="provider",
            )
        raise _not_found(
            f"model {request.model!r} is not served: provider {provider!r} is not enabled "
            f"(enabled: {enabled})"
        )
    first = Candidate(providers[provider], model or providers[provider].provider.model)
    if not request.fallback:
        return [first], True
    return [first, *(_default(providers[name]) for name in order if name != provider)], True


def _not_found(message: str) -> PlanError:
    return PlanError(message, param="model", type_="model_not_found", status=404)


def _default(actor: ProviderActor) -> Candidate:
    return Candidate(actor, actor.provider.model)


def _serving(
    model: str | None, order: list[str], providers: Mapping[str, ProviderActor]
) -> list[Candidate]:
    """A bare model: the providers configured with it first, then the rest of the order."""
    serving = [name for name in order if providers[name].provider.model == model]
    if not serving:
        head, sep, _ = (model or "").partition("/")
        why = (
            f"{head!r} is not a known provider (known: {', '.join(KNOWN_PROVIDERS)})"
            if sep
            else "no enabled provider is configured with it"
        )
        raise _not_found(
            f"model {model!r} is not served: {why}; name a model as provider/model with an "
            "enabled provider, an alias, or auto (GET /v1/models lists them)"
        )
    rest = [name for name in order if name not in serving]
    return [_default(providers[name]) for name in (*serving, *rest)]


def _capable(request: ChatRequest, candidates: list[Candidate], *, named: bool) -> list[Candidate]:
    wanted = requested_features(request)
    if not wanted or not candidates:
        return candidates
    kept: list[Candidate] = []
    refused: dict[str, list[str]] = {}
    for candidate in candidates:
        missing = candidate.actor.adapter.unsupported(wanted)
        if missing:
            refused.setdefault(candidate.actor.name, missing)
        else:
            kept.append(candidate)
    first = candidates[0].actor.name
    if named and first in refused:
        param = refused[first][0]
        raise PlanError(
            f"parameter `{param}` is not supported by provider {first!r}",
            param=param,
            type_="unsupported_parameter",
        )
    if not kept:
        details = "; ".join(f"{name}: {', '.join(missing)}" for name, missing in refused.items())
        param = next(iter(refused.values()))[0]
        raise PlanError(
            f"parameter `{param}` is not supported by any provider this model can use "
            f"(unsupported: {details})",
            param=param,
            type_="unsupported_parameter",
        )
    return kept
