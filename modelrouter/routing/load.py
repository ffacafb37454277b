"""`load_settings`: the environment's settings with the routing file (`MODELROUTER_CONFIG`) over
them, every problem of both listed at once.

The file adds deployments to the environment's providers; one named like an environment
provider replaces it, in its place (`Settings.replaced_providers` says which). Without the
file, the settings are exactly the environment's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from modelrouter.config import ConfigError, ProviderSettings, Settings
from modelrouter.config import load_settings as load_environment
from modelrouter.routing.file import RoutingFile, read_routing_file


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from `env` (default: the process environment) and the routing file
    it names, or raise ConfigError with every problem of both."""
    env = os.environ if env is None else env
    problems: list[str] = []
    settings: Settings | None = None
    try:
        settings = load_environment(env)
    except ConfigError as exc:
        problems += exc.problems
    path = env.get("MODELROUTER_CONFIG", "").strip()
    if not path:
        if settings is None:
            raise ConfigError(problems)
        return settings
    # The environment's RATE_LIMIT_REQUESTS_PER_MINUTE, or its default when it was wrong.
    default_rpm = (settings or Settings()).rate_limit_requests_per_minute
    routing, found = read_routing_file(path, env, default_rpm=default_rpm)
    problems += found
    if settings is not None and routing is not None:
        problems += _clashes(settings, routing)
    if problems:
        raise ConfigError(problems)
    assert settings is not None
    assert routing is not None
    return with_routing(settings, routing)


def _clashes(settings: Settings, routing: RoutingFile) -> list[str]:
    """A name meaning two things: a group and a MODEL_ALIASES alias."""
    groups = {group.name for group in routing.groups}
    return [
        f"model group {alias.name!r} of MODELROUTER_CONFIG is also an alias in MODEL_ALIASES: "
        "rename one"
        for alias in settings.model_aliases
        if alias.name in groups
    ]


def with_routing(settings: Settings, routing: RoutingFile) -> Settings:
    """`settings` with the file's deployments (replacing environment providers of the same
    name, in their place) and its model groups."""
    declared = {d.name: d for d in routing.deployments}
    providers: list[ProviderSettings] = []
    replaced: list[str] = []
    for provider in settings.providers:
        if provider.name in declared:
            replaced.append(provider.name)
            providers.append(declared.pop(provider.name))
        else:
            providers.append(provider)
    providers += declared.values()
    # A skipped known provider (no key) that the file declares is no longer skipped.
    skipped = tuple(n for n in settings.skipped_providers if n not in {p.name for p in providers})
    return msgspec.structs.replace(
        settings,
        providers=tuple(providers),
        skipped_providers=skipped,
        model_groups=routing.groups,
        default_model=routing.default_model,
        replaced_providers=tuple(replaced),
    )
