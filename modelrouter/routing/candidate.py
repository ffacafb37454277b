"""A candidate of a request's plan: one deployment (its provider actor) and the upstream model
it is asked for."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from modelrouter.actors.provider import ProviderActor


class Candidate(msgspec.Struct, frozen=True):
    actor: ProviderActor
    model: str
