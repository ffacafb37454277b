"""Model groups at run time: each group's members (a deployment and the upstream model it
serves the group with), fixed when the router is built; the strategy orders them per request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from modelrouter.config import ModelGroup, Strategy
from modelrouter.routing.candidate import Candidate

if TYPE_CHECKING:
    from modelrouter.actors.provider import ProviderActor
    from modelrouter.routing.strategies import Strategies
    from modelrouter.tenants.prices import PriceTable

# Kinds whose name alone says which vendor prices the model (an `openai` kind may be any
# OpenAI-compatible server, an `azure` one any Azure contract): their bundled prices apply
# to a deployment of any name.
PRICED_BY_KIND = frozenset({"anthropic", "ollama"})


class Group:
    __slots__ = ("fallbacks", "members", "name", "strategy")

    def __init__(
        self,
        name: str,
        strategy: Strategy,
        members: tuple[Candidate, ...],
        fallbacks: tuple[str, ...],
    ) -> None:
        self.name = name
        self.strategy = strategy
        self.members = members  # in the routing file's order (`cost`: cheapest first)
        self.fallbacks = fallbacks

    def order(self, strategies: Strategies, stream: bool) -> list[Candidate]:
        """A new list: the caller may extend it."""
        if len(self.members) < 2:
            return list(self.members)
        return strategies.order(self.strategy)(self.members, stream)


def build_groups(
    groups: Sequence[ModelGroup],
    providers: Mapping[str, ProviderActor],
    *,
    prices: PriceTable | None,
) -> dict[str, Group]:
    built: dict[str, Group] = {}
    for group in groups:
        members = tuple(
            Candidate(actor, actor.provider.models[group.name])
            for actor in providers.values()
            if group.name in actor.provider.models
        )
        if group.strategy == "cost":
            members = tuple(sorted(members, key=lambda c: _price(c, prices)))
        built[group.name] = Group(group.name, group.strategy, members, group.fallbacks)
    return built


def _price(candidate: Candidate, prices: PriceTable | None) -> tuple[bool, float]:
    """Input plus output USD per million tokens; an unpriced deployment sorts last."""
    settings = candidate.actor.provider
    names = [settings.name]
    if settings.kind in PRICED_BY_KIND and settings.kind != settings.name:
        names.append(settings.kind)
    for name in names:
        price = prices.price(name, candidate.model) if prices is not None else None
        if price is not None:
            return False, price.input + price.output
    return True, 0.0
