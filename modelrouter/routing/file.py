"""The routing file (`MODELROUTER_CONFIG`): deployments and model groups, checked whole.

`read_routing_file` returns what the file declares and every problem in it, each with the
file's path and line. Every key is documented in docs/routing.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import msgspec
import yaml

from modelrouter.aliases import RESERVED
from modelrouter.config import OPT_INS, STRATEGIES, ModelGroup, OptIn, ProviderSettings, Strategy
from modelrouter.routing.deployment import DEPLOYMENT_KEYS, GROUP_NAME, read_deployment
from modelrouter.routing.nodes import Node, Source

MAX_FILE_BYTES: Final = 4 * 1024 * 1024
TOP_KEYS: Final = frozenset({"deployments", "models", "default_model"})
GROUP_KEYS: Final = frozenset({"strategy", "fallbacks", "hedge"})
__all__ = [
    "DEPLOYMENT_KEYS",
    "GROUP_KEYS",
    "GROUP_NAME",
    "TOP_KEYS",
    "RoutingFile",
    "read_routing_file",
]


class RoutingFile(msgspec.Struct, frozen=True):
    deployments: tuple[ProviderSettings, ...]  # in the file's order
    groups: tuple[ModelGroup, ...]  # every group some deployment serves, in first-seen order
    default_model: str | None


def read_routing_file(
    path: str, env: Mapping[str, str], *, default_rpm: int
) -> tuple[RoutingFile | None, list[str]]:
    """The file's deployments and groups, and every problem (None when there is one)."""
    source = Source(path, env)
    root = _compose(path, source)
    if root is None:
        return None, source.problems
    top = source.fields(root, "the file", allowed=TOP_KEYS, required=frozenset({"deployments"}))
    if top is None:
        return None, source.problems
    deployments = _deployments(source, top.get("deployments"), default_rpm)
    served = {group: None for d in deployments for group in d.models}
    groups = _groups(source, top.get("models"), served)
    default = _default_model(source, top.get("default_model"), groups)
    if source.problems:
        return None, source.problems
    return RoutingFile(tuple(deployments), tuple(groups.values()), default), []


def _compose(path: str, source: Source) -> Node | None:
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        source.whole(f"MODELROUTER_CONFIG={path!r} cannot be read ({exc.strerror})")
        return None
    if len(data) > MAX_FILE_BYTES:
        source.whole(f"MODELROUTER_CONFIG={path!r} is over {MAX_FILE_BYTES} bytes")
        return None
    try:
        root = yaml.compose(data, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc)
        source.whole(f"{path}{line}: not valid YAML: {what}")
        return None
    if root is None:
        source.whole(f"{path}:1: the file is empty (it needs deployments:)")
    return root


def _deployments(source: Source, node: Node | None, default_rpm: int) -> list[ProviderSettings]:
    if node is None:
        return []  # the missing key is a problem already
    items = source.sequence(node, "deployments")
    if items is None:
        return []
    if not items:
        source.problem(node, "deployments: the list is empty")
    found: list[ProviderSettings] = []
    names: set[str] = set()
    for index, item in enumerate(items):
        deployment = read_deployment(source, item, index, default_rpm=default_rpm)
        if deployment is None:
            continue
        if deployment.name and deployment.name in names:
            source.problem(item, f"deployment {deployment.name!r} is declared twice")
            continue
        names.add(deployment.name)
        found.append(deployment)
    return found


def _groups(source: Source, node: Node | None, served: dict[str, None]) -> dict[str, ModelGroup]:
    """Every served group (`ordered` unless `models:` says otherwise), checked against what
    `models:` declares: a declared group no deployment serves is a problem."""
    groups = {name: ModelGroup(name) for name in served}
    items = source.mapping(node, "models") if node is not None else {}
    for name, (key, value) in (items or {}).items():
        what = f"model group {name!r}"
        if not GROUP_NAME.fullmatch(name) or name in RESERVED:
            source.problem(
                key,
                f"{what}: a group name is letters, digits and . _ : - (no '/'), "
                "at most 64 characters, and not auto",
            )
            continue
        if name not in served:
            source.problem(key, f"{what} is served by no deployment (list it in one's models)")
            continue
        fields = source.fields(value, what, allowed=GROUP_KEYS, required=frozenset())
        if fields is None:
            continue
        strategy = _strategy(source, fields.get("strategy"), what)
        fallbacks = _fallbacks(source, fields.get("fallbacks"), what, name, served)
        hedge = _opt_in(source, fields.get("hedge"), f"{what}: hedge")
        groups[name] = ModelGroup(name, strategy, fallbacks, hedge)
    return groups


def _strategy(source: Source, node: Node | None, what: str) -> Strategy:
    if node is None:
        return "ordered"
    text = source.text(node, f"{what}: strategy")
    if text is not None and text not in STRATEGIES:
        source.problem(node, f"{what}: strategy {text!r} is not one of {', '.join(STRATEGIES)}")
    for strategy in STRATEGIES:
        if text == strategy:
            return strategy
    return "ordered"


def _opt_in(source: Source, node: Node | None, what: str) -> OptIn | None:
    if node is None:
        return None
    text = source.text(node, what)
    for mode in OPT_INS:
        if text == mode:
            return mode
    if text is not None:
        source.problem(node, f"{what} {text!r} is not off, on or allow")
    return None


def _fallbacks(
    source: Source, node: Node | None, what: str, name: str, served: dict[str, None]
) -> tuple[str, ...]:
    items = source.sequence(node, f"{what}: fallbacks") if node is not None else None
    found: list[str] = []
    for item in items or []:
        group = source.text(item, f"{what}: fallbacks")
        if group is None:
            continue
        if group == name:
            source.problem(item, f"{what}: a group cannot fall back to itself")
        elif group not in served:
            source.problem(item, f"{what}: fallback {group!r} is not a model group")
        elif group in found:
            source.problem(item, f"{what}: fallback {group!r} is named twice")
        else:
            found.append(group)
    return tuple(found)


def _default_model(source: Source, node: Node | None, groups: dict[str, ModelGroup]) -> str | None:
    if node is None:
        return next(iter(groups), None)
    name = source.text(node, "default_model")
    if name is not None and name not in groups:
        source.problem(node, f"default_model {name!r} is not a model group")
    return name
