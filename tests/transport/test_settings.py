"""Configuration of the way out: URLs, proxies, CAs, the body bound and header values.

Every problem is listed at once, names its variable, and never quotes a secret or a URL
(which may carry a password).
"""

from __future__ import annotations

import msgspec
import pytest

from modelrouter.cli import main
from modelrouter.config import ConfigError, describe, load_settings, secrets_of

GROQ = {"PROVIDER_ORDER": "groq", "GROQ_API_KEY": "gsk-test-key-0123456789"}
PROXY_PASSWORD = "pr0xy-Secret-99"


def problems_of(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    return caught.value.problems


# -- malformed URLs: listed, never a traceback -----------------------------------------------


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("http://[::1", "well-formed host"),
        ("http://[::1]:99999/v1", "port from 1 to 65535"),
        ("http://h:99999/v1", "port from 1 to 65535"),
        ("http://h:abc/v1", "port from 1 to 65535"),
        ("http://h:0/v1", "port from 1 to 65535"),
        ("http://h:-1/v1", "port from 1 to 65535"),
        ("http:///v1", "no host"),
        ("ftp://h/v1", "must start with http://, https://"),
        ("http://h/v1?api-version=1", "query"),
        ("http://h/v 1", "space"),
    ],
)
def test_a_malformed_base_url_is_a_listed_problem(value: str, why: str) -> None:
    problems = problems_of({**GROQ, "GROQ_BASE_URL": value})
    assert len(problems) == 1
    assert problems[0].startswith("GROQ_BASE_URL ")
    assert why in problems[0]


def test_every_malformed_url_is_listed_at_once() -> None:
    env = {
        "PROVIDER_ORDER": "groq,openrouter,ollama",
        "GROQ_API_KEY": "k1",
        "OPENROUTER_API_KEY": "k2",
        "GROQ_BASE_URL": "http://[::1",
        "OPENROUTER_BASE_URL": "https://openrouter.ai:99999/api/v1",
        "OLLAMA_BASE_URL": "http://localhost:abc",
        "REDIS_URL": "redis://[bad",
        "HTTPS_PROXY": "http://proxy:77777",
        "http_proxy": "http://[proxy",
        "GROQ_PROXY": "http://proxy:abc",
    }
    problems = problems_of(env)
    assert sorted(p.split()[0] for p in problems) == sorted(
        set(env) - {"PROVIDER_ORDER", "GROQ_API_KEY", "OPENROUTER_API_KEY"}
    )


@pytest.mark.parametrize(
    "url",
    [
        "redis://[bad",
        "redis://cache:99999/0",
        "redis://cache:abc/0",
        "http://cache:6379",
        "redis+sentinel://s1:26379,s2:abc/mymaster",
        "unix:///run/redis.sock?db=0 x",
    ],
)
def test_a_malformed_redis_url_is_a_listed_problem(url: str) -> None:
    problems = problems_of({"REDIS_URL": url})
    assert len(problems) == 1
    assert problems[0].startswith("REDIS_URL ")


@pytest.mark.parametrize(
    "url",
    [
        "redis://cache:6379/0",
        "rediss://:pw@cache/1",
        "unix:///run/redis.sock?db=0",
        "redis+sentinel://:pw@s1:26379,s2:26379/mymaster/0",
        "redis://",
    ],
)
def test_well_formed_redis_urls_are_accepted(url: str) -> None:
    assert load_settings({"REDIS_URL": url}).redis_url == url


# -- proxies ---------------------------------------------------------------------------------


def test_no_proxy_settings_by_default() -> None:
    upstream = load_settings({}).upstream
    assert (upstream.http_proxy, upstream.https_proxy, upstream.no_proxy) == (None, None, ())


def test_lower_case_proxy_variables_win_as_in_curl() -> None:
    env = {
        "HTTPS_PROXY": "http://upper:3128",
        "https_proxy": "http://lower:3128",
        "HTTP_PROXY": "http://plain-upper:3128",
        "NO_PROXY": "upper.example",
        "no_proxy": "lower.example, .internal  10.0.0.0/8",
    }
    upstream = load_settings(env).upstream
    assert upstream.https_proxy == "http://lower:3128"
    assert upstream.http_proxy == "http://plain-upper:3128"
    assert upstream.no_proxy == ("lower.example", ".internal", "10.0.0.0/8")


def test_a_bare_host_and_port_is_an_http_proxy_as_in_curl() -> None:
    assert load_settings({"HTTPS_PROXY": "proxy.corp:3128"}).upstream.https_proxy == (
        "http://proxy.corp:3128"
    )


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("https://proxy:443", "http:// proxy"),
        ("socks5://proxy:1080", "http:// proxy"),
        ("http://proxy:3128/path", "no path"),
        ("http://proxy:99999", "port from 1 to 65535"),
        ("http://[proxy", "well-formed host"),
    ],
)
def test_a_proxy_we_cannot_use_is_a_listed_problem(value: str, why: str) -> None:
    problems = problems_of({"HTTPS_PROXY": value})
    assert len(problems) == 1
    assert problems[0].startswith("HTTPS_PROXY ")
    assert why in problems[0]


def test_a_provider_proxy_set_to_empty_means_direct_and_unset_means_the_environment() -> None:
    env = {**GROQ, "PROVIDER_ORDER": "groq,ollama", "HTTPS_PROXY": "http://corp:3128"}
    assert load_settings(env).providers[0].proxy is None
    assert load_settings({**env, "GROQ_PROXY": ""}).providers[0].proxy == ""
    assert load_settings({**env, "GROQ_PROXY": "  "}).providers[0].proxy == ""
    chosen = load_settings({**env, "GROQ_PROXY": "http://own:8080"}).providers
    assert (chosen[0].proxy, chosen[1].proxy) == ("http://own:8080", None)


def test_proxy_credentials_are_masked_in_describe_and_listed_as_secrets() -> None:
    env = {
        **GROQ,
        "HTTPS_PROXY": f"http://alice:{PROXY_PASSWORD}@proxy:3128",
        "GROQ_PROXY": f"http://bob:{PROXY_PASSWORD}x@own:8080",
    }
    settings = load_settings(env)
    data = describe(settings)
    text = msgspec.json.encode(data).decode()
    assert PROXY_PASSWORD not in text
    assert data["upstream"]["https_proxy"] == "http://alice:***@proxy:3128"  # type: ignore[index]
    assert data["providers"][0]["proxy"] == "http://bob:***@own:8080"  # type: ignore[index]
    found = secrets_of(settings)
    assert PROXY_PASSWORD in found
    assert "YWxpY2U6cHIweHktU2VjcmV0LTk5" in found  # the Basic token a proxy might echo


def test_check_config_masks_every_url_credential(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROVIDER_ORDER", "ollama")
    monkeypatch.setenv("OLLAMA_BASE_URL", f"https://ops:{PROXY_PASSWORD}@ollama.corp/base")
    monkeypatch.setenv("https_proxy", f"http://token-{PROXY_PASSWORD}@proxy:3128")
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert PROXY_PASSWORD not in out
    assert "https://ops:***@ollama.corp/base" in out
    assert "http://***@proxy:3128" in out


# -- CAs and the body bound ------------------------------------------------------------------------


def test_a_provider_ca_bundle_must_be_a_readable_pem_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    missing = str(tmp_path / "missing.pem")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    problems = problems_of({**GROQ, "GROQ_CA_BUNDLE": missing, "SSL_CERT_FILE": str(not_pem)})
    assert [p.split()[0] for p in problems] == [
        f"GROQ_CA_BUNDLE={missing!r}",
        f"SSL_CERT_FILE={str(not_pem)!r}",
    ]
    assert "No such file" in problems[0]
    assert "not a directory" in problems_of({"SSL_CERT_DIR": str(not_pem)})[0]


def test_the_upstream_body_bound_defaults_to_16_mib_and_is_validated() -> None:
    assert load_settings({}).upstream.max_body_bytes == 16 * 1024 * 1024
    assert load_settings({"MAX_UPSTREAM_BODY_BYTES": "2048"}).upstream.max_body_bytes == 2048
    assert problems_of({"MAX_UPSTREAM_BODY_BYTES": "10"})[0].startswith("MAX_UPSTREAM_BODY_BYTES")


# -- header values --------------------------------------------------------------------------------

INJECTED = "gsk-real-key\r\nX-Injected: yes"


@pytest.mark.parametrize("key", [INJECTED, "gsk\nkey", "gsk\x00key", "gsk-kéy", "gsk\x7fkey"])
def test_a_provider_key_that_could_break_a_header_is_refused_without_being_shown(
    key: str,
) -> None:
    problems = problems_of({**GROQ, "GROQ_API_KEY": key})
    assert len(problems) == 1
    assert problems[0].startswith("GROQ_API_KEY contains")
    assert "gsk" not in problems[0]


def test_a_model_name_with_a_line_break_is_refused() -> None:
    assert problems_of({**GROQ, "GROQ_MODEL": "llama\r\nX: y"})[0].startswith("GROQ_MODEL contains")


def test_a_key_with_cr_lf_stops_start_up_with_a_one_line_reason(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROVIDER_ORDER", "groq")
    monkeypatch.setenv("GROQ_API_KEY", INJECTED)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    reasons = [line for line in err.splitlines() if line.startswith("  - ")]
    assert reasons == [
        "  - GROQ_API_KEY contains a line break, a control or a non-ASCII character "
        "(value not shown): it is sent in a header"
    ]
    assert "real-key" not in err


def test_credentials_in_a_base_url_are_used_or_refused_never_both() -> None:
    env = {"PROVIDER_ORDER": "ollama", "OLLAMA_BASE_URL": "https://ops:pw-0123456789@ollama.corp"}
    assert load_settings(env).providers[0].base_url == "https://ops:pw-0123456789@ollama.corp"
    assert "pw-0123456789" in secrets_of(load_settings(env))
    problems = problems_of({**env, "OLLAMA_API_KEY": "key"})
    assert problems == [
        "OLLAMA_BASE_URL carries user:password and OLLAMA_API_KEY is set too: keep one "
        "(credentials in the URL are sent as Basic auth, in the key's place)"
    ]


def test_the_readme_and_env_example_document_these_settings_with_their_default() -> None:
    from pathlib import Path

    from modelrouter.config import UpstreamSettings

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    example = (root / ".env.example").read_text()
    names = ["HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "_PROXY", "_CA_BUNDLE", "SSL_CERT_FILE"]
    names += ["SSL_CERT_DIR", "MAX_UPSTREAM_BODY_BYTES"]
    for name in names:
        assert name in readme, name
        assert name in example, name
    bound = UpstreamSettings().max_body_bytes
    row = next(line for line in readme.splitlines() if line.startswith("| `MAX_UPSTREAM_BODY"))
    assert row.endswith(f"| `{bound}` |")
    assert f"# MAX_UPSTREAM_BODY_BYTES={bound}\n" in example
    assert "not followed" in readme
    assert "not followed" in example
