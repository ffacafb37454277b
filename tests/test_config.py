"""Configuration from an environment mapping: defaults, validation, secrets kept out of sight."""

from __future__ import annotations

import msgspec
import pytest

from modelrouter.config import (
    ConfigError,
    Settings,
    describe,
    is_loopback,
    load_settings,
    secrets_of,
)

GROQ_KEY = "gsk_Q7fX2mZp9LwR4tYv8NbKcD3h"
OPENROUTER_KEY = "sk-or-v1-8e1c0b7a5f3d9e2b4c6a"
OPENAI_KEY = "sk-proj-Jh5Tq2Wz8Rk3Mv7Xn4Lp"
CLIENT_KEY_LONG = "client-Vq9Zr3Ty6Uw1Ie4Oa"
CLIENT_KEY_SHORT = "cK7#q2"
REDIS_PASSWORD = "r3dPw-Gx8Hj2Kl5Mn"


def problems_of(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    return caught.value.problems


def names(settings: Settings) -> list[str]:
    return [p.name for p in settings.providers]


# --- Defaults ----------------------------------------------------------------------------------


def test_defaults_match_the_documented_values() -> None:
    s = load_settings({})
    assert s.host == "127.0.0.1"
    assert s.port == 8000
    assert s.provider_timeout == 30.0
    assert s.first_chunk_timeout == 3.0
    assert s.max_operation_timeout == 120.0
    assert s.backoff_base_seconds == 5.0
    assert s.backoff_max_seconds == 300.0
    assert s.rate_limit_requests_per_minute == 60
    assert s.max_concurrent_streams == 10
    assert s.api_keys == ()
    assert not s.auth_enabled
    assert s.redis_url is None


def test_without_keys_only_ollama_is_enabled_and_the_cloud_providers_are_skipped() -> None:
    s = load_settings({})
    assert names(s) == ["ollama"]
    assert s.skipped_providers == ("groq", "openrouter")


def test_default_order_is_groq_openrouter_ollama() -> None:
    s = load_settings({"GROQ_API_KEY": GROQ_KEY, "OPENROUTER_API_KEY": OPENROUTER_KEY})
    assert names(s) == ["groq", "openrouter", "ollama"]
    assert s.skipped_providers == ()


def test_default_per_provider_rate_limits() -> None:
    s = load_settings({"GROQ_API_KEY": GROQ_KEY, "OPENROUTER_API_KEY": OPENROUTER_KEY})
    assert {p.name: p.rate_limit for p in s.providers} == {
        "groq": 30,
        "openrouter": 20,
        "ollama": 100,
    }


def test_default_provider_endpoints_and_kinds() -> None:
    s = load_settings({"GROQ_API_KEY": GROQ_KEY, "OPENROUTER_API_KEY": OPENROUTER_KEY})
    groq, openrouter, ollama = s.providers
    assert (groq.kind, groq.base_url) == ("openai", "https://api.groq.com/openai/v1")
    assert (openrouter.kind, openrouter.base_url) == ("openai", "https://openrouter.ai/api/v1")
    assert (ollama.kind, ollama.base_url) == ("ollama", "http://localhost:11434")
    assert ollama.api_key is None


def test_empty_variables_count_as_unset() -> None:
    env = {
        "PROVIDER_TIMEOUT": "",
        "PORT": "  ",
        "HOST": "",
        "API_KEY": "",
        "GROQ_API_KEY": "",
        "PROVIDER_ORDER": "",
        "REDIS_URL": "",
        "OLLAMA_MODEL": "",
    }
    assert load_settings(env) == load_settings({})


# --- Providers ---------------------------------------------------------------------------------


def test_a_cloud_provider_is_enabled_when_its_key_is_set() -> None:
    s = load_settings({"GROQ_API_KEY": GROQ_KEY})
    assert names(s) == ["groq", "ollama"]
    assert s.skipped_providers == ("openrouter",)
    groq = s.provider("groq")
    assert groq is not None
    assert groq.api_key == GROQ_KEY


def test_provider_order_sets_the_order_and_the_selection() -> None:
    env = {"PROVIDER_ORDER": " ollama , groq ", "GROQ_API_KEY": GROQ_KEY}
    assert names(load_settings(env)) == ["ollama", "groq"]


def test_provider_overrides_are_read_with_the_provider_prefix() -> None:
    env = {
        "GROQ_API_KEY": GROQ_KEY,
        "GROQ_BASE_URL": "http://127.0.0.1:9999/v1/",
        "GROQ_MODEL": "tiny",
        "GROQ_RATE_LIMIT": "0",
        "GROQ_MAX_CONCURRENCY": "3",
    }
    groq = load_settings(env).provider("groq")
    assert groq is not None
    assert groq.base_url == "http://127.0.0.1:9999/v1"
    assert groq.model == "tiny"
    assert groq.rate_limit == 0
    assert groq.max_concurrency == 3


def test_openai_provider_uses_the_global_rate_limit() -> None:
    env = {
        "PROVIDER_ORDER": "openai",
        "OPENAI_API_KEY": OPENAI_KEY,
        "RATE_LIMIT_REQUESTS_PER_MINUTE": "42",
    }
    openai = load_settings(env).provider("openai")
    assert openai is not None
    assert openai.rate_limit == 42
    assert openai.kind == "openai"


def test_openai_provider_defaults_to_sixty_requests_per_minute() -> None:
    openai = load_settings({"PROVIDER_ORDER": "openai", "OPENAI_API_KEY": OPENAI_KEY}).provider(
        "openai"
    )
    assert openai is not None
    assert openai.rate_limit == 60


def test_global_rate_limit_does_not_change_the_documented_provider_limits() -> None:
    s = load_settings({"GROQ_API_KEY": GROQ_KEY, "RATE_LIMIT_REQUESTS_PER_MINUTE": "5"})
    assert {p.name: p.rate_limit for p in s.providers} == {"groq": 30, "ollama": 100}


def test_unknown_provider_in_provider_order_is_refused() -> None:
    problems = problems_of({"PROVIDER_ORDER": "groq,anthropik,ollama"})
    assert len(problems) == 1
    assert "anthropik" in problems[0]
    assert "unknown" in problems[0]


@pytest.mark.parametrize("order", ["ollama,ollama", "groq,ollama,groq"])
def test_duplicate_provider_in_provider_order_is_refused(order: str) -> None:
    problems = problems_of({"PROVIDER_ORDER": order, "GROQ_API_KEY": GROQ_KEY})
    assert len(problems) == 1
    assert "twice" in problems[0]


def test_duplicate_skipped_provider_is_refused_too() -> None:
    problems = problems_of({"PROVIDER_ORDER": "groq,groq"})
    assert any("twice" in p and "groq" in p for p in problems)


# --- Validation --------------------------------------------------------------------------------


def test_every_invalid_value_is_reported_together() -> None:
    env = {
        "PROVIDER_TIMEOUT": "abc",
        "FIRST_CHUNK_TIMEOUT": "0",
        "MAX_OPERATION_TIMEOUT": "-1",
        "PORT": "70000",
        "RATE_LIMIT_REQUESTS_PER_MINUTE": "lots",
        "MAX_CONCURRENT_STREAMS": "0",
        "MAX_BODY_BYTES": "10",
        "LOG_FORMAT": "xml",
        "LOG_LEVEL": "loud",
        "LOG_FLUSH_SECONDS": "-0.5",
        "OLLAMA_BASE_URL": "ftp://example.com",
        "OLLAMA_MAX_CONCURRENCY": "0",
        "REDIS_URL": "http://cache:6379",
    }
    problems = problems_of(env)
    text = "\n".join(problems)
    for name in env:
        assert name in text, f"{name} not reported in {problems}"
    assert len(problems) == len(env)


def test_config_error_message_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"PORT": "0", "LOG_FORMAT": "yaml"})
    message = str(caught.value)
    assert "PORT" in message
    assert "LOG_FORMAT" in message


def test_backoff_max_below_backoff_base_is_refused() -> None:
    problems = problems_of({"BACKOFF_BASE_SECONDS": "10", "BACKOFF_MAX_SECONDS": "5"})
    assert problems == ["BACKOFF_MAX_SECONDS must be >= BACKOFF_BASE_SECONDS"]


@pytest.mark.parametrize("value", ["nan", "-0.5", "1e-9"])
def test_timeouts_must_be_positive_numbers(value: str) -> None:
    assert any("PROVIDER_TIMEOUT" in p for p in problems_of({"PROVIDER_TIMEOUT": value}))


@pytest.mark.parametrize("value", ["0", "65536", "80.5", "http"])
def test_port_must_be_a_tcp_port(value: str) -> None:
    assert any("PORT" in p for p in problems_of({"PORT": value}))


@pytest.mark.parametrize("scheme", ["redis", "rediss", "unix"])
def test_redis_url_accepts_the_redis_schemes(scheme: str) -> None:
    assert load_settings({"REDIS_URL": f"{scheme}://cache/0"}).redis_url == f"{scheme}://cache/0"


def test_log_settings_are_normalised() -> None:
    s = load_settings({"LOG_LEVEL": "debug", "LOG_FORMAT": "console"})
    assert (s.log_level, s.log_format) == ("DEBUG", "console")


# --- Binding and client keys -------------------------------------------------------------------


def test_api_key_is_a_comma_separated_list() -> None:
    s = load_settings({"API_KEY": f" {CLIENT_KEY_LONG} ,, {CLIENT_KEY_SHORT},"})
    assert s.api_keys == (CLIENT_KEY_LONG, CLIENT_KEY_SHORT)
    assert s.auth_enabled


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "gateway.example.com", "::"])
def test_non_loopback_host_without_api_key_is_refused(host: str) -> None:
    problems = problems_of({"HOST": host})
    assert len(problems) == 1
    assert "API_KEY" in problems[0]
    assert host in problems[0]


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1"])
def test_non_loopback_host_with_api_key_is_accepted(host: str) -> None:
    s = load_settings({"HOST": host, "API_KEY": CLIENT_KEY_LONG})
    assert s.host == host
    assert s.auth_enabled


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_host_without_api_key_is_accepted(host: str) -> None:
    assert load_settings({"HOST": host}).host == host


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("192.168.1.1", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# --- Secrets -----------------------------------------------------------------------------------


def all_secrets_env() -> dict[str, str]:
    return {
        "HOST": "0.0.0.0",
        "API_KEY": f"{CLIENT_KEY_LONG},{CLIENT_KEY_SHORT}",
        "GROQ_API_KEY": GROQ_KEY,
        "OPENROUTER_API_KEY": OPENROUTER_KEY,
        "PROVIDER_ORDER": "groq,openrouter,openai,ollama",
        "OPENAI_API_KEY": OPENAI_KEY,
        "REDIS_URL": f"redis://default:{REDIS_PASSWORD}@cache.internal:6379/0",
    }


ALL_SECRETS = [GROQ_KEY, OPENROUTER_KEY, OPENAI_KEY, CLIENT_KEY_LONG, CLIENT_KEY_SHORT]


def test_describe_masks_every_secret() -> None:
    encoded = msgspec.json.encode(describe(load_settings(all_secrets_env()))).decode()
    for secret in [*ALL_SECRETS, REDIS_PASSWORD]:
        # No five-character run of a secret may appear (the last four may, by design).
        for start in range(len(secret) - 4):
            assert secret[start : start + 5] not in encoded, (secret, encoded)


def test_describe_keeps_the_rest_of_the_redis_url() -> None:
    data = describe(load_settings(all_secrets_env()))
    assert data["redis_url"] == "redis://default:***@cache.internal:6379/0"
    assert data["state_backend"] == "redis"


def test_describe_masks_a_redis_password_without_a_user() -> None:
    data = describe(load_settings({"REDIS_URL": f"redis://:{REDIS_PASSWORD}@cache:6379"}))
    assert REDIS_PASSWORD not in str(data["redis_url"])
    assert str(data["redis_url"]).endswith("@cache:6379")


def test_describe_shows_only_the_tail_of_long_keys_and_nothing_of_short_ones() -> None:
    data = describe(load_settings(all_secrets_env()))
    assert data["api_keys"] == ["***" + CLIENT_KEY_LONG[-4:], "***"]
    providers = {p["name"]: p for p in data["providers"]}  # type: ignore[attr-defined]
    assert providers["groq"]["api_key"] == "***" + GROQ_KEY[-4:]
    assert providers["ollama"]["api_key"] is None


def test_describe_without_secrets_is_plain_data() -> None:
    data = describe(load_settings({}))
    assert data["api_keys"] == []
    assert data["redis_url"] is None
    assert data["state_backend"] == "memory"
    assert data["provider_timeout"] == 30.0
    msgspec.json.encode(data)


def test_describe_does_not_change_the_settings() -> None:
    s = load_settings(all_secrets_env())
    describe(s)
    assert s.api_keys == (CLIENT_KEY_LONG, CLIENT_KEY_SHORT)
    assert s.provider("groq").api_key == GROQ_KEY  # type: ignore[union-attr]


def test_secrets_of_lists_every_configured_secret() -> None:
    found = secrets_of(load_settings(all_secrets_env()))
    assert sorted(found) == sorted([*ALL_SECRETS, REDIS_PASSWORD])


def test_secrets_of_is_empty_without_secrets() -> None:
    assert secrets_of(load_settings({"REDIS_URL": "redis://cache:6379/0"})) == []


def test_a_redis_password_in_the_query_string_is_masked_and_listed() -> None:
    s = load_settings({"REDIS_URL": f"redis://cache:6379/0?password={REDIS_PASSWORD}"})
    assert REDIS_PASSWORD not in msgspec.json.encode(describe(s)).decode()
    assert REDIS_PASSWORD in secrets_of(s)


def test_secrets_of_lists_a_percent_encoded_redis_password_decoded() -> None:
    s = load_settings({"REDIS_URL": "redis://:hunter%40two-secret@cache:6379/0"})
    assert "hunter@two-secret" in secrets_of(s)


def test_bracketed_ipv6_loopback_counts_as_loopback() -> None:
    from modelrouter.config import is_loopback

    assert is_loopback("[::1]")


def test_connection_and_shutdown_bounds_default_to_the_documented_values() -> None:
    s = load_settings({})
    assert (s.header_timeout, s.keepalive_timeout, s.max_connections) == (10.0, 75.0, None)
    assert (s.drain_seconds, s.shutdown_timeout) == (0.0, 25.0)


@pytest.mark.parametrize(
    "name",
    [
        "DRAIN_SECONDS",
        "SHUTDOWN_TIMEOUT_SECONDS",
        "HEADER_TIMEOUT_SECONDS",
        "KEEPALIVE_TIMEOUT_SECONDS",
    ],
)
@pytest.mark.parametrize("value", ["inf", "nan", "-1", "3601", "soon"])
def test_a_shutdown_or_connection_bound_must_be_finite(name: str, value: str) -> None:
    """DRAIN_SECONDS=inf was accepted, and SIGTERM then never ended the process."""
    with pytest.raises(ConfigError) as caught:
        load_settings({name: value})
    assert any(problem.startswith(f"{name}={value!r}") for problem in caught.value.problems)


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_max_connections_must_be_a_positive_integer(value: str) -> None:
    with pytest.raises(ConfigError):
        load_settings({"MAX_CONNECTIONS": value})
