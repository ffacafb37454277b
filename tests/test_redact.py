"""The redactor: configured secrets and credential-shaped strings never reach a log line."""

from __future__ import annotations

import pytest

from modelrouter.redact import REDACTED, Redactor

CONFIGURED = "my-own-secret-value-42"


def test_configured_secret_is_removed() -> None:
    out = Redactor([CONFIGURED])(f"connecting with {CONFIGURED} now")
    assert CONFIGURED not in out
    assert out == f"connecting with {REDACTED} now"


def test_every_occurrence_of_a_configured_secret_is_removed() -> None:
    out = Redactor([CONFIGURED])(f"{CONFIGURED}/{CONFIGURED}?k={CONFIGURED}")
    assert CONFIGURED not in out
    assert out.count(REDACTED) == 3


def test_a_secret_containing_another_is_removed_whole() -> None:
    redact = Redactor(["abcd", "abcd-efgh-ijkl"])
    assert redact("token abcd-efgh-ijkl end") == f"token {REDACTED} end"


def test_secrets_added_later_are_removed_too() -> None:
    redact = Redactor(["first-secret"])
    redact.add(["second-secret"])
    out = redact("first-secret and second-secret")
    assert out == f"{REDACTED} and {REDACTED}"


def test_a_removed_secret_is_no_longer_redacted_unless_another_owner_holds_it() -> None:
    redact = Redactor(["shared-secret", "first-only"])
    redact.add(["shared-secret", "second-only"])
    redact.remove(["shared-secret", "first-only"])
    assert redact("shared-secret first-only second-only") == f"{REDACTED} first-only {REDACTED}"
    redact.remove(["shared-secret", "second-only"])
    assert redact("shared-secret second-only") == "shared-secret second-only"


def test_a_secret_with_regex_characters_is_removed_literally() -> None:
    secret = "p@ss.w*rd(1)+[x]"
    assert Redactor([secret])(f"password={secret};") == f"password={REDACTED};"


def test_secrets_shorter_than_four_characters_are_ignored() -> None:
    # Redacting "a" or "ab" everywhere would destroy every log line.
    assert Redactor(["a", "ab", "abc"])("a cab and a crab") == "a cab and a crab"


@pytest.mark.parametrize(
    "header",
    [
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc-def_ghi",
        "authorization: bearer abcdefgh12345678",
        "BEARER   AbC123+/=~._-xyz",
    ],
)
def test_bearer_tokens_are_removed(header: str) -> None:
    token = header.rsplit(maxsplit=1)[-1]
    out = Redactor()(header)
    assert token not in out
    assert REDACTED in out


@pytest.mark.parametrize(
    "key",
    [
        "sk-abcdefghijklmnopqrstuvwx",
        "sk-proj-Jh5Tq2Wz8Rk3Mv7Xn4Lp_9aB",
        "gsk_Q7fX2mZp9LwR4tYv8NbKcD3hJk",
        "sk-or-v1-8e1c0b7a5f3d9e2b4c6a1f0e",
        "sk-ant-api03-AbCdEfGhIjKlMnOp-QrSt_UvWx",
    ],
)
@pytest.mark.parametrize(
    "template",
    [
        "{}",
        "key={} rest",
        '{{"api_key": "{}"}}',
        "upstream said: invalid key '{}'.",
        "https://host/v1?key={}&x=1",
    ],
)
def test_provider_key_shapes_are_removed(key: str, template: str) -> None:
    out = Redactor()(template.format(key))
    assert key not in out
    assert key[-8:] not in out
    assert REDACTED in out


def test_several_credentials_in_one_line_are_all_removed() -> None:
    line = (
        "groq=gsk_Q7fX2mZp9LwR4tYv8NbKcD3h openrouter=sk-or-v1-8e1c0b7a5f3d9e2b "
        f"Authorization: Bearer abcdefgh12345678 own={CONFIGURED}"
    )
    out = Redactor([CONFIGURED])(line)
    for secret in ("gsk_Q7fX2mZp", "sk-or-v1-8e1c", "abcdefgh1234", CONFIGURED):
        assert secret not in out
    assert out.startswith("groq=")
    assert "openrouter=" in out
    assert "own=" in out


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello there, how is the weather today?",
        "provider groq failed: HTTP 503: service unavailable",
        "risk-assessment and desk-lamp are ordinary words",
        "the bearer of bad news",
        "ask-me-anything about sk-8 boards",
        "request_id=5f0c2d6e-2b1f-4c8e-9a57-0e7b3c2d1a90 attempts=2",
        "model meta-llama/llama-3.3-70b-instruct at https://openrouter.ai/api/v1",
        "wörld 🙂 — naïve café",
        '{"error": {"message": "Rate limit reached", "type": "tokens"}}',
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert Redactor([CONFIGURED])(text) == text


def test_redactor_without_secrets_still_removes_credential_shapes() -> None:
    assert Redactor()("gsk_Q7fX2mZp9LwR4tYv8NbK") == REDACTED


def test_ordinary_prose_after_the_word_bearer_is_left_alone() -> None:
    from modelrouter.redact import Redactor

    text = "the bearer instruments were tuned"
    assert Redactor()(text) == text
