"""The routing file: read with the safe loader, checked whole (every problem at its line),
`${VAR}` from the environment with secrets never shown, merged over the environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from modelrouter.cli import main
from modelrouter.config import ConfigError, describe, secrets_of
from modelrouter.config import load_settings as load_environment
from modelrouter.routing import load_settings
from tests.routing.support import BASE_ENV, settings_from, write

GOOD = """
deployments:
  - name: groq-a
    kind: openai
    base_url: http://127.0.0.1:9/v1/
    api_key: ${GROQ_KEY_A}
    models: {fast: llama-3.1-8b-instant}
    rpm: 30
    weight: 3
  - name: az-east
    kind: azure
    base_url: http://127.0.0.1:9
    api_key: ${AZ_KEY}
    api_version: v1
    models:
      fast: gpt-4o-mini-prod
      smart: gpt-4o-prod
    stream_options: false
    provider_timeout: 12
    first_chunk_timeout: 2.5
    connect_timeout: 1
    max_concurrency: 8
    proxy: ""
models:
  fast: {strategy: weighted, fallbacks: [smart]}
  smart: {strategy: cost}
default_model: smart
"""
SECRETS = {
    "GROQ_KEY_A": "gsk-file-secret-groq-a-0001",
    "AZ_KEY": "az-file-secret-east-0002",
}

BAD = """
deployments:
  - name: Groq A
    kind: openai
    base_url: http://127.0.0.1:9/v1
    models: {fast: llama}
  - name: b
    kind: bedrock
    base_url: ftp://x
    api_key: ${NOPE_KEY}
    models: {fast: m}
    rpm: -1
    weight: 0
    colour: blue
  - name: b
    kind: openai
    base_url: http://x?q=1
    models: {smart: m}
    api_version: v1
    stream_options: maybe
    provider_timeout: 0
  - kind: gemini
models:
  fast: {strategy: fastest, fallbacks: [nope, fast]}
  ghost: {}
default_model: nope
extra: 1
"""
BAD_PROBLEMS = [
    (2, "name 'Groq A' must be lower-case letters, digits and . _ -"),
    (7, "deployment 'b': kind 'bedrock' is not one of openai, anthropic, ollama, azure, gemini"),
    (8, "deployment 'b': base_url must start with http://, https://"),
    (9, "deployment 'b': api_key: ${NOPE_KEY} not set in the environment"),
    (11, "deployment 'b': rpm must be an integer >= 0"),
    (12, "deployment 'b': weight must be a number > 0"),
    (13, "deployments[1]: unknown key 'colour'"),
    (14, "deployment 'b' is declared twice"),
    (16, "deployment 'b': base_url must not have a ?query or #fragment"),
    (18, "deployment 'b': api_version applies to kind azure only"),
    (19, "deployment 'b': stream_options must be true or false"),
    (20, "deployment 'b': provider_timeout must be a number of seconds > 0 and <= 3600"),
    (21, "deployments[3]: missing base_url, models, name"),
    (23, "model group 'fast': strategy 'fastest' is not one of ordered, weighted, least-busy"),
    (23, "model group 'fast': fallback 'nope' is not a model group"),
    (23, "model group 'fast': a group cannot fall back to itself"),
    (24, "model group 'ghost' is served by no deployment"),
    (25, "default_model 'nope' is not a model group"),
    (26, "the file: unknown key 'extra'"),
]


def test_a_routing_file_declares_deployments_and_groups_over_the_environment(
    tmp_path: Path,
) -> None:
    settings = settings_from(tmp_path, GOOD, **SECRETS)
    groq_a, az = settings.providers
    assert (groq_a.name, groq_a.kind, groq_a.base_url) == (
        "groq-a",
        "openai",
        "http://127.0.0.1:9/v1",
    )
    assert groq_a.api_key == SECRETS["GROQ_KEY_A"]
    assert (groq_a.models, groq_a.model, groq_a.rate_limit, groq_a.weight) == (
        {"fast": "llama-3.1-8b-instant"},
        "llama-3.1-8b-instant",
        30,
        3.0,
    )
    assert az.rate_limit == 60, "rpm defaults to RATE_LIMIT_REQUESTS_PER_MINUTE"
    assert (az.api_version, az.stream_options, az.proxy, az.max_concurrency) == ("v1", False, "", 8)
    assert (az.provider_timeout, az.first_chunk_timeout, az.connect_timeout) == (12.0, 2.5, 1.0)
    assert [(g.name, g.strategy, g.fallbacks) for g in settings.model_groups] == [
        ("fast", "weighted", ("smart",)),
        ("smart", "cost", ()),
    ]
    assert settings.default_model == "smart"


def test_without_default_model_auto_is_the_first_group(tmp_path: Path) -> None:
    text = GOOD.replace("default_model: smart\n", "")
    assert settings_from(tmp_path, text, **SECRETS).default_model == "fast"


def test_every_problem_of_the_file_is_listed_at_once_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "router.yaml", BAD)
    with pytest.raises(ConfigError) as raised:
        load_settings(BASE_ENV | {"MODELROUTER_CONFIG": path})
    problems = raised.value.problems
    assert len(problems) == len(BAD_PROBLEMS), "\n".join(problems)
    for problem, (line, text) in zip(problems, BAD_PROBLEMS, strict=True):
        assert problem.startswith(f"{path}:{line}: "), problem
        assert text in problem, problem


def test_environment_and_file_problems_are_listed_together(tmp_path: Path) -> None:
    path = write(tmp_path / "router.yaml", BAD)
    with pytest.raises(ConfigError) as raised:
        load_settings(BASE_ENV | {"MODELROUTER_CONFIG": path, "PORT": "http"})
    assert any(p.startswith("PORT='http'") for p in raised.value.problems)
    assert len(raised.value.problems) == len(BAD_PROBLEMS) + 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("deployments:\n  - name: a\n    kind: openai: x\n", ":3: not valid YAML"),
        ("", ":1: the file is empty"),
        ("- a\n", ":1: the file must be a mapping"),
        ("deployments: []\n", ":1: deployments: the list is empty"),
        ("models: {}\n", ":1: the file: missing deployments"),
        ("deployments:\n  - 3\n", ":2: deployments[0] must be a mapping"),
    ],
)
def test_a_file_that_is_not_a_routing_file_is_named_at_its_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path / "router.yaml", text)
    with pytest.raises(ConfigError) as raised:
        load_settings(BASE_ENV | {"MODELROUTER_CONFIG": path})
    assert any(p.startswith(path) and expected in p for p in raised.value.problems), (
        raised.value.problems
    )


def test_an_unreadable_file_is_a_problem() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(BASE_ENV | {"MODELROUTER_CONFIG": "/nonexistent/router.yaml"})
    assert "cannot be read" in raised.value.problems[0]


def test_a_key_given_twice_is_a_problem_not_silently_the_last(tmp_path: Path) -> None:
    text = GOOD.replace("    weight: 3\n", "    weight: 3\n    weight: 1\n")
    with pytest.raises(ConfigError) as raised:
        settings_from(tmp_path, text, **SECRETS)
    assert raised.value.problems == [
        f"{tmp_path}/router.yaml:9: deployments[0]: 'weight' is given twice"
    ]


def test_a_bad_secret_from_the_environment_is_refused_without_being_shown(tmp_path: Path) -> None:
    leaked = "line-one\nline-two-secret"
    with pytest.raises(ConfigError) as raised:
        settings_from(tmp_path, GOOD, GROQ_KEY_A=leaked, AZ_KEY=SECRETS["AZ_KEY"])
    (problem,) = raised.value.problems
    assert ":5: deployment 'groq-a': api_key contains a line break" in problem
    assert "line-two-secret" not in problem


def test_variables_fill_numbers_and_flags_as_yaml_reads_them(tmp_path: Path) -> None:
    text = GOOD.replace("rpm: 30", "rpm: ${RPM}").replace(
        "stream_options: false", "stream_options: ${SO}"
    )
    settings = settings_from(tmp_path, text, RPM="7", SO="true", **SECRETS)
    assert settings.providers[0].rate_limit == 7
    assert settings.providers[1].stream_options is True


def test_file_secrets_are_masked_and_redacted(tmp_path: Path) -> None:
    settings = settings_from(tmp_path, GOOD, **SECRETS)
    shown = json.dumps(describe(settings))
    for secret in SECRETS.values():
        assert secret not in shown
        assert secret in secrets_of(settings)


def test_a_group_named_like_an_alias_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        settings_from(
            tmp_path, GOOD, MODEL_ALIASES="fast=ollama", PROVIDER_ORDER="ollama", **SECRETS
        )
    assert raised.value.problems == [
        "model group 'fast' of MODELROUTER_CONFIG is also an alias in MODEL_ALIASES: rename one"
    ]


def test_without_the_file_the_environment_alone_configures_as_before() -> None:
    env = {"GROQ_API_KEY": "gsk-env-0001", "MODEL_ALIASES": "fast=groq"}
    assert load_settings(env) == load_environment(env)


def test_a_file_deployment_named_like_a_provider_replaces_it_and_check_config_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = GOOD.replace("name: groq-a", "name: groq")
    path = write(tmp_path / "router.yaml", text)
    env = BASE_ENV | SECRETS | {"MODELROUTER_CONFIG": path, "GROQ_API_KEY": "gsk-env-key-0003"}
    env |= {"PROVIDER_ORDER": "groq,ollama"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["check-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in shown["providers"]] == ["groq", "ollama", "az-east"]
    assert shown["providers"][0]["base_url"] == "http://127.0.0.1:9/v1", "the file's, in its place"
    assert shown["notes"] == [
        "provider 'groq' of the environment is replaced by the routing file's deployment 'groq'"
    ]
    out = json.dumps(shown)
    for secret in [*SECRETS.values(), "gsk-env-key-0003"]:
        assert secret not in out


def test_check_config_lists_every_file_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MODELROUTER_CONFIG", write(tmp_path / "router.yaml", BAD))
    monkeypatch.setenv("PROVIDER_ORDER", "groq")
    with capture_logs():
        assert main(["check-config"]) == 2
    err = capsys.readouterr().err
    assert err.count(f"{tmp_path}/router.yaml:") == len(BAD_PROBLEMS)


def test_every_key_of_the_file_is_documented() -> None:
    from modelrouter.config import ADAPTER_KINDS, STRATEGIES
    from modelrouter.routing.deployment import DEPLOYMENT_KEYS
    from modelrouter.routing.file import GROUP_KEYS, TOP_KEYS

    text = (Path(__file__).resolve().parents[2] / "docs" / "routing.md").read_text()
    rows = {line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| `")}
    for key in sorted(TOP_KEYS | GROUP_KEYS | DEPLOYMENT_KEYS | set(STRATEGIES)):
        assert f"`{key}`" in rows or f"`{key}` (default)" in rows, key
    for kind in ADAPTER_KINDS:
        assert f"`{kind}`" in text, kind


ONE = """
deployments:
  - name: one
    kind: {kind}
    base_url: {url}
    models: {{fast: m}}
    api_key: k-0001
    {key}: {value}
"""


@pytest.mark.parametrize(
    ("kind", "url", "key", "value", "expected"),
    [
        ("openai", "http://h", "proxy", "socks5://p:1080", "proxy must be an http:// proxy"),
        ("openai", "http://h", "ca_bundle", "/nonexistent.pem", "ca_bundle='/nonexistent.pem' is"),
        ("azure", "http://h", "api_version", "'2024 10'", "api_version '2024 10' is not a version"),
        ("openai", "http://h", "max_connections", "0", "max_connections must be an integer >= 1"),
        ("openai", "http://h", "rpm", "1.5", "rpm must be an integer >= 0"),
        ("openai", "http://h", "tpm", "0", "tpm must be an integer >= 1"),
        ("openai", "http://h", "max_parallel_streams", "two", "max_parallel_streams must be an"),
        ("openai", "http://h", "weight", "heavy", "weight must be a number > 0"),
        ("openai", "http://h", "connect_timeout", ".inf", "connect_timeout must be a number"),
        ("openai", "http://u:p@h", "rpm", "1", "base_url carries user:password and api_key"),
        ("openai", "http://h:0", "rpm", "1", "base_url is not a valid URL"),
    ],
)
def test_each_deployment_value_is_checked_where_it_is_written(
    tmp_path: Path, kind: str, url: str, key: str, value: str, expected: str
) -> None:
    text = ONE.format(kind=kind, url=url, key=key, value=value)
    with pytest.raises(ConfigError) as raised:
        settings_from(tmp_path, text)
    (problem,) = raised.value.problems
    assert expected in problem, problem
    # The value's line; a clash of two values, at the deployment's; the URL's, at its own.
    line = 2 if "carries" in expected else 4 if "URL" in expected else 7
    assert problem.startswith(f"{tmp_path}/router.yaml:{line}: "), problem


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        ("{}", "models is empty"),
        ("{a/b: m}", "model group 'a/b' must be letters"),
        ("{auto: m}", "model group 'auto' must be letters"),
        ('{fast: "m\\u0007"}', "models.fast has a control character"),
        ("[fast]", "models must be a mapping"),
    ],
)
def test_a_deployments_models_are_group_names_to_upstream_models(
    tmp_path: Path, models: str, expected: str
) -> None:
    text = ONE.format(kind="openai", url="http://h", key="rpm", value="1").replace(
        "{fast: m}", models
    )
    with pytest.raises(ConfigError) as raised:
        settings_from(tmp_path, text)
    assert any(expected in p for p in raised.value.problems), raised.value.problems
