"""Routing: the routing file (`MODELROUTER_CONFIG`: deployments and model groups), planning a
request's candidates, and the strategies that order a group.

- `load`: `load_settings(env)`, the environment's settings with the file over them;
- `file`, `deployment`, `nodes`: reading and checking the file, each problem with its line;
- `planning`: `Planner` (a request -> its candidates), `PlanError`;
- `groups`, `strategies`, `latency`: model groups and how their deployments are ordered.
"""

from modelrouter.routing.candidate import Candidate
from modelrouter.routing.latency import Latency
from modelrouter.routing.load import load_settings
from modelrouter.routing.planning import PlanError, Planner, split_model
from modelrouter.routing.strategies import Strategies

__all__ = [
    "Candidate",
    "Latency",
    "PlanError",
    "Planner",
    "Strategies",
    "load_settings",
    "split_model",
]
