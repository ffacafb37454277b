"""The candidate order for one request, chosen by its `model` (and `provider`) fields.

- `auto` or nothing: the routing file's `default_model` group; without a file, the configured
  provider order.
- a model group (the routing file): its deployments in the group's strategy order, then each
  of its `fallbacks` groups in turn (only the first candidate with `"fallback": false`).
- an alias (`MODEL_ALIASES`): exactly its chain of provider/model targets (its first target
  alone with `"fallback": false`).
- `name/model`, or the `provider` field: that provider or deployment first with that model (a
  group it serves is mapped to its upstream model); then, with fallback, the rest of its group
  (a file deployment) or of the environment's order (a provider).
- a bare model equal to providers' configured model: those providers first, then the rest.

Candidates whose adapter cannot honour every parameter the request sets are left out, so a
parameter is never silently dropped; if the provider the request names is one of them, or no
candidate is left, planning fails with the parameter named.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from modelrouter.aliases import ModelAlias
from modelrouter.config import KNOWN_PROVIDERS, ModelGroup
from modelrouter.providers import Refusal, requested_features
from modelrouter.routing.candidate import Candidate
from modelrouter.routing.groups import Group, build_groups
from modelrouter.routing.strategies import Strategies
from modelrouter.schemas import ChatRequest
from modelrouter.tenants.keys import allowed

if TYPE_CHECKING:
    from modelrouter.actors.provider import ProviderActor
    from modelrouter.tenants.prices import PriceTable


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


def split_model(model: str | None, known: Mapping[str, object]) -> tuple[str | None, str | None]:
    """`provider/model` names both; `auto` or nothing names neither; anything else is a model."""
    if model is None or model == "auto":
        return None, None
    head, sep, tail = model.partition("/")
    if sep and head in known and tail:
        return head, tail
    return None, model


class Planner:
    """Plans requests over a fixed set of provider actors (one per deployment), the
    environment's aliases and the routing file's model groups."""

    def __init__(
        self,
        providers: Mapping[str, ProviderActor],
        *,
        aliases: Sequence[ModelAlias] = (),
        groups: Sequence[ModelGroup] = (),
        default_model: str | None = None,
        prices: PriceTable | None = None,
        strategies: Strategies | None = None,
    ) -> None:
        self.providers = dict(providers)
        # The environment's providers: `auto` without a file, and a provider's fallback order.
        self.order = [n for n, a in self.providers.items() if not a.provider.from_file]
        self.aliases = {alias.name: alias for alias in aliases}
        self.groups: dict[str, Group] = build_groups(groups, self.providers, prices=prices)
        self.default_model = default_model
        self.strategies = strategies or Strategies()
        self._known = {**KNOWN_PROVIDERS, **self.providers}  # what `name/model` may name

    def plan(
        self, request: ChatRequest, *, stream: bool = False, allow: tuple[str, ...] = ()
    ) -> list[Candidate]:
        """The candidates, in the order their strategies say (`stream`: which latency), those
        a key's allow-list (`allow`, patterns; empty: all) does not allow left out."""
        candidates, named = self._candidates(request, stream=stream, ordered=False)
        if allow:
            candidates = allowed_candidates(request, candidates, allow)
        return _capable(request, candidates, named=named)

    def chain(self, request: ChatRequest, *, allow: tuple[str, ...] = ()) -> list[Candidate]:
        """The same candidates in a fixed order (no strategy applied): what the request
        resolves to, for the response cache's key."""
        candidates, named = self._candidates(request, stream=False, ordered=True)
        if allow:
            candidates = allowed_candidates(request, candidates, allow)
        return _capable(request, candidates, named=named)

    def _candidates(
        self, request: ChatRequest, *, stream: bool, ordered: bool
    ) -> tuple[list[Candidate], bool]:
        """The candidates, and whether the first is the provider the request named."""
        provider, model = request.provider, request.model
        if model == "auto" or model is None:
            model = self.default_model if provider is None else None
        if provider is None and model is not None:
            group = self.groups.get(model)
            if group is not None:
                found = self._walk(group, stream=stream, ordered=ordered)
                return (found if request.fallback else found[:1]), False
            alias = self.aliases.get(model)
            if alias is not None:
                targets = [t for t in alias.targets if t.provider in self.providers]
                if not request.fallback:
                    targets = targets[:1]
                return [Candidate(self.providers[t.provider], t.model) for t in targets], False
            provider, model = split_model(model, self._known)
            if provider is None:
                return self._serving(model), False
        if provider is None:
            return [_default(self.providers[name]) for name in self.order], False
        return self._named(request, provider, model, stream=stream, ordered=ordered), True

    def _walk(self, group: Group, *, stream: bool, ordered: bool) -> list[Candidate]:
        """The group's members in strategy order, then each fallback group's (a deployment
        serving the same model twice is tried once)."""
        found = list(group.members) if ordered else group.order(self.strategies, stream)
        for name in group.fallbacks:
            fallback = self.groups[name]
            more = fallback.members if ordered else fallback.order(self.strategies, stream)
            found += [c for c in more if c not in found]
        return found

    def _named(
        self,
        request: ChatRequest,
        provider: str,
        model: str | None,
        *,
        stream: bool,
        ordered: bool,
    ) -> list[Candidate]:
        actor = self.providers.get(provider)
        if actor is None:
            enabled = ", ".join(self.providers) or "none"
            if request.provider is not None:  # the `provider` field names it
                raise PlanError(
                    f"provider {provider!r} is unknown or not enabled (enabled: {enabled})",
                    param="provider",
                )
            raise _not_found(
                f"model {request.model!r} is not served: provider {provider!r} is not enabled "
                f"(enabled: {enabled})"
            )
        settings = actor.provider
        first = Candidate(actor, settings.models.get(model or "", model or settings.model))
        if not request.fallback:
            return [first]
        if settings.from_file:
            group = self.groups.get(model or "")
            rest = self._walk(group, stream=stream, ordered=ordered) if group else []
        else:
            rest = [_default(self.providers[name]) for name in self.order]
        return [first, *(c for c in rest if c.actor is not actor)]

    def _serving(self, model: str | None) -> list[Candidate]:
        """A bare model: the providers configured with it first, then the rest of the order."""
        serving = [
            Candidate(actor, model)
            for actor in self.providers.values()
            if model is not None and _serves(actor, model)
        ]
        if not serving:
            head, sep, _ = (model or "").partition("/")
            why = (
                f"{head!r} is not a known provider or deployment (known: {', '.join(self._known)})"
                if sep
                else "no enabled provider is configured with it"
            )
            raise _not_found(
                f"model {model!r} is not served: {why}; name a model as provider/model with an "
                "enabled provider, a model group, an alias, or auto (GET /v1/models lists them)"
            )
        named = {c.actor.name for c in serving}
        rest = [_default(self.providers[n]) for n in self.order if n not in named]
        return [*serving, *rest]


def allowed_candidates(
    request: ChatRequest, candidates: list[Candidate], allow: tuple[str, ...]
) -> list[Candidate]:
    """The candidates a key's allow-list lets through: all of them when the model group or
    alias asked for is allowed, else those whose `provider/model` (or bare model) is; none
    left is a 403 `model_not_allowed` naming the model (`auto` is the configured order, so it
    is never allowed by name)."""
    asked = request.model
    by_name = asked is not None and asked != "auto" and request.provider is None
    if by_name and allowed(allow, (asked or "",)):
        return candidates
    kept = [c for c in candidates if allowed(allow, (f"{c.actor.name}/{c.model}", c.model))]
    if not kept:
        name = asked if request.provider is None else f"{request.provider}/{asked or ''}"
        raise PlanError(
            f"model {name or 'auto'!r} is not allowed for this key",
            param="model",
            type_="model_not_allowed",
            status=403,
        )
    return kept


def _serves(actor: ProviderActor, model: str) -> bool:
    settings = actor.provider
    return model == settings.model or model in settings.models.values()


def _not_found(message: str) -> PlanError:
    return PlanError(message, param="model", type_="model_not_found", status=404)


def _default(actor: ProviderActor) -> Candidate:
    return Candidate(actor, actor.provider.model)


def _capable(request: ChatRequest, candidates: list[Candidate], *, named: bool) -> list[Candidate]:
    wanted = requested_features(request)
    kept: list[Candidate] = []
    refused: dict[str, list[Refusal]] = {}
    for candidate in candidates:
        missing = candidate.actor.adapter.unsupported(request, wanted)
        if missing:
            refused.setdefault(candidate.actor.name, missing)
        else:
            kept.append(candidate)
    if not refused:
        return kept
    first = candidates[0].actor.name
    if named and first in refused:
        refusal = refused[first][0]
        why = f" ({refusal.why})" if refusal.why else ""
        raise PlanError(
            f"parameter `{refusal.param}` is not supported by provider {first!r}{why}",
            param=refusal.param,
            type_="unsupported_parameter",
        )
    if not kept:
        details = "; ".join(f"{name}: {', '.join(map(str, r))}" for name, r in refused.items())
        param = next(iter(refused.values()))[0].param
        raise PlanError(
            f"parameter `{param}` is not supported by any provider this model can use "
            f"(unsupported: {details})",
            param=param,
            type_="unsupported_parameter",
        )
    return kept
