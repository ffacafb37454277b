"""The actor runtime: router supervisor, provider actors, relays and the messages between them."""

from modelrouter.actors.base import Actor, ActorStopped, MailboxFull
from modelrouter.actors.messages import HealthChanged, Route
from modelrouter.actors.provider import ProviderActor
from modelrouter.actors.relay import Relay
from modelrouter.actors.router import SHUTDOWN, RouterSupervisor
from modelrouter.actors.supervisor import Supervisor

__all__ = [
    "SHUTDOWN",
    "Actor",
    "ActorStopped",
    "HealthChanged",
    "MailboxFull",
    "ProviderActor",
    "Relay",
    "Route",
    "RouterSupervisor",
    "Supervisor",
]
