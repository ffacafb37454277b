"""Choosing provider and model per request: auto, provider/model, configured models, aliases."""

from __future__ import annotations

import json

import pytest

from modelrouter.aliases import AliasTarget, ModelAlias
from modelrouter.config import ConfigError, describe, load_settings, secrets_of
from tests.conftest import USER, Gateway, Mock, parse_sse, two_providers

KEYS = {"GROQ_API_KEY": "gsk-test-key-0001", "OPENROUTER_API_KEY": "sk-or-test-key-0002"}
ANTHROPIC_KEY = "sk-ant-api03-Zx8Qw2Er5Ty7Ui9Op1As"


def aliases_of(text: str, **env: str) -> tuple[ModelAlias, ...]:
    return load_settings({**KEYS, "MODEL_ALIASES": text, **env}).model_aliases


def problems_of(text: str, **env: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings({**KEYS, "MODEL_ALIASES": text, **env})
    return caught.value.problems


# --- Configuration -----------------------------------------------------------------------------


def test_aliases_map_names_to_fallback_chains() -> None:
    aliases = aliases_of(
        "fast=groq/llama-3.1-8b-instant, smart = openrouter/anthropic/claude-sonnet-4:beta|groq"
    )
    assert aliases == (
        ModelAlias("fast", (AliasTarget("groq", "llama-3.1-8b-instant"),)),
        ModelAlias(
            "smart",
            (
                AliasTarget("openrouter", "anthropic/claude-sonnet-4:beta"),
                AliasTarget("groq", "llama-3.3-70b-versatile"),  # a bare provider: its model
            ),
        ),
    )


def test_no_aliases_by_default() -> None:
    assert load_settings(KEYS).model_aliases == ()
    assert aliases_of(" , ") == ()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("fast", "is not name=provider/model"),
        ("fast=", "is not name=provider/model"),
        ("=groq/m", "alias name ''"),
        ("auto=groq/m", "alias name 'auto'"),
        ("a/b=groq/m", "alias name 'a/b'"),
        ("fast=groq/m,fast=openrouter/m", "defined twice"),
        ("fast=nowhere/m", "unknown provider 'nowhere'"),
        ("fast=openai/gpt-4o", "'openai', which is not enabled"),
        ("fast=groq/", "is not provider/model or provider"),
        ("fast=groq/m|", "target '' is not provider/model"),
        ("fast=/m", "is not provider/model or provider"),
    ],
)
def test_malformed_aliases_are_refused_at_start_up(text: str, needle: str) -> None:
    problems = problems_of(text)
    assert any(needle in problem and "MODEL_ALIASES" in problem for problem in problems), problems


def test_every_alias_problem_is_reported_together() -> None:
    problems = problems_of("a=nowhere/m,b=openai/x,c", PORT="0")
    assert len(problems) == 4


def test_anthropic_is_a_known_provider_with_its_own_variables() -> None:
    env = {"PROVIDER_ORDER": "anthropic", "ANTHROPIC_API_KEY": ANTHROPIC_KEY}
    default = load_settings(env).providers[0]
    assert (default.kind, default.base_url, default.model) == (
        "anthropic",
        "https://api.anthropic.com",
        "claude-haiku-4-5",
    )
    assert default.rate_limit == 60
    env |= {
        "ANTHROPIC_BASE_URL": "http://proxy.internal:8080/",
        "ANTHROPIC_MODEL": "claude-opus-4-1",
        "ANTHROPIC_RATE_LIMIT": "15",
    }
    settings = load_settings(env)
    anthropic = settings.providers[0]
    assert anthropic.base_url == "http://proxy.internal:8080"
    assert anthropic.model == "claude-opus-4-1"
    assert anthropic.rate_limit == 15
    assert ANTHROPIC_KEY in secrets_of(settings)
    assert ANTHROPIC_KEY not in json.dumps(describe(settings))


def test_anthropic_without_a_key_is_skipped() -> None:
    settings = load_settings({"PROVIDER_ORDER": "anthropic,ollama"})
    assert settings.skipped_providers == ("anthropic",)


# --- Routing -----------------------------------------------------------------------------------


async def model_of(client, path: str, model: str, **extra: object) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """Send `model` to `path`; return (provider, model) of the answer."""
    response = await client.post(path, json={**USER, "model": model, **extra})
    assert response.status == 200, await response.text()
    provider = response.headers["x-modelrouter-provider"]
    if path == "/stream":
        assert parse_sse(await response.text())[-1] == ("message", "[DONE]")
    if path == "/chat":
        return provider, (await response.json())["model"]
    return provider, ""


@pytest.mark.parametrize("path", ["/chat", "/stream", "/v1/chat/completions"])
async def test_an_alias_routes_to_its_chain_in_order(
    gateway: Gateway, mock: Mock, path: str
) -> None:
    env = two_providers(mock, groq="status=500", MODEL_ALIASES="pair=groq/g-1|openrouter/o-1")
    client = await gateway(**env)
    provider, _ = await model_of(client, path, "pair")
    assert provider == "openrouter"
    assert [r["body"]["model"] for r in await mock.received()] == ["g-1", "o-1"]
    assert await mock.count("status=500") == 1  # groq was tried first, with its alias model


@pytest.mark.parametrize("path", ["/chat", "/v1/chat/completions"])
async def test_an_alias_chain_does_not_fall_over_outside_itself(
    gateway: Gateway, mock: Mock, path: str
) -> None:
    env = two_providers(mock, groq="status=500", MODEL_ALIASES="solo=groq/g-1")
    client = await gateway(**env)
    response = await client.post(path, json={**USER, "model": "solo"})
    assert response.status == 502
    assert await mock.count("") == 0, "openrouter is not in the alias's chain"


async def test_an_alias_without_fallback_stops_after_its_first_failure(
    gateway: Gateway, mock: Mock
) -> None:
    env = two_providers(mock, groq="status=500", MODEL_ALIASES="pair=groq/g|openrouter/o")
    client = await gateway(**env)
    response = await client.post("/chat", json={**USER, "model": "pair", "fallback": False})
    assert response.status == 502
    assert await mock.count("") == 0


async def test_an_alias_without_fallback_tries_only_its_first_target_even_when_it_is_out(
    gateway: Gateway, mock: Mock
) -> None:
    env = two_providers(mock, groq="status=500", MODEL_ALIASES="pair=groq/g|openrouter/o")
    client = await gateway(**env)
    first = {**USER, "model": "groq/g", "fallback": False}
    assert (await client.post("/chat", json=first)).status == 502
    response = await client.post("/chat", json={**USER, "model": "pair", "fallback": False})
    # groq is blacklisted: the one whose blacklist ends first is tried rather than failing at
    # once (the routing rules), and openrouter, the alias's second target, is not tried at all.
    assert response.status == 502
    assert await mock.count("status=500") == 2
    assert await mock.count("") == 0


@pytest.mark.parametrize("path", ["/chat", "/stream", "/v1/chat/completions"])
async def test_provider_slash_model_goes_first_on_every_route(
    gateway: Gateway, mock: Mock, path: str
) -> None:
    client = await gateway(**two_providers(mock))
    provider, _ = await model_of(client, path, "openrouter/x/y:free")
    assert provider == "openrouter"
    assert (await mock.received())[-1]["body"]["model"] == "x/y:free"


@pytest.mark.parametrize("path", ["/chat", "/stream", "/v1/chat/completions"])
async def test_auto_follows_the_configured_order(gateway: Gateway, mock: Mock, path: str) -> None:
    client = await gateway(**two_providers(mock, PROVIDER_ORDER="openrouter,groq"))
    provider, _ = await model_of(client, path, "auto")
    assert provider == "openrouter"


async def test_a_bare_configured_model_goes_to_the_provider_serving_it(
    gateway: Gateway, mock: Mock
) -> None:
    client = await gateway(**two_providers(mock, OPENROUTER_MODEL="gpt-4o-mini"))
    provider, model = await model_of(client, "/chat", "gpt-4o-mini")
    assert (provider, model) == ("openrouter", "gpt-4o-mini")


async def test_an_alias_may_shadow_a_configured_model(gateway: Gateway, mock: Mock) -> None:
    env = two_providers(mock, OPENROUTER_MODEL="gpt-4o-mini", MODEL_ALIASES="gpt-4o-mini=groq/g")
    client = await gateway(**env)
    provider, model = await model_of(client, "/chat", "gpt-4o-mini")
    assert (provider, model) == ("groq", "g")
