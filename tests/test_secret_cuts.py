"""A credential never reaches a client or a log line in part, wherever text is cut.

Upstream error bodies are read up to MAX_ERROR_BODY bytes and their text kept up to
MAX_ERROR_TEXT characters. A key echoed across either cut must be redacted whole before the
cut, never cut first (which left 41 of a key's 42 characters outside the redaction pattern).
Each key shape the redactor knows is placed at every offset around each cut."""

from __future__ import annotations

import json

import pytest

from modelrouter.config import ProviderSettings
from modelrouter.providers import build_adapter
from modelrouter.providers.base import MAX_ERROR_BODY, MAX_ERROR_TEXT, Adapter
from modelrouter.redact import Redactor

CONFIGURED = "own-provider-key-without-a-known-shape-7f3a9c"
# One of each shape of modelrouter/redact.py, and the provider's own configured key.
KEYS = {
    "bearer": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl-x_y",
    "openai": "sk-proj-Jh5Tq2Wz8Rk3Mv7Xn4Lp9aBcDeFgHiJk",
    "groq": "gsk_Q7fX2mZp9LwR4tYv8NbKcD3hJkLmNoPqRsTu",
    "openrouter": "sk-or-v1-8e1c0b7a5f3d9e2b4c6a1f0e9d8c7b6a",
    "anthropic": "sk-ant-api03-AbCdEfGhIjKlMnOp-QrSt_UvWxYz0123",
    "publishable": "pk_live_51HxYzAbCdEfGhIjKlMnOpQr",
    "restricted": "rk_live_51HxYzAbCdEfGhIjKlMnOpQr",
    "key-dash": "key-0123456789abcdefABCDEF",
    "basic": "Proxy-Authorization: Basic dXNlcjpwYXNzd29yZC0xMjM0NQ",
    "userinfo": "https://admin:s3cr3t-passw0rd-9@proxy.internal:3128",
    "configured": CONFIGURED,
}
FILLER = "upstream said: invalid credentials. "


def secret_part(key: str) -> str:
    """What must not show: the key without the label its shape begins with."""
    for label in ("Proxy-Authorization: Basic ", "Bearer ", "https://admin:"):
        if key.startswith(label):
            return key[len(label) :].split("@", maxsplit=1)[0]
    return key.split("_", 1)[-1] if key.startswith(("pk_", "rk_")) else key[4:]


def shown(output: str, key: str) -> list[str]:
    """Pieces (4 characters or more) of the key's secret part that appear in `output`."""
    secret = secret_part(key)
    return [secret[i : i + 4] for i in range(len(secret) - 3) if secret[i : i + 4] in output]


def adapter(kind: str = "openai") -> Adapter:
    return build_adapter(
        ProviderSettings(
            name="groq" if kind == "openai" else kind,
            kind=kind,  # type: ignore[arg-type]
            base_url="http://127.0.0.1:9/v1" if kind == "openai" else "http://127.0.0.1:9",
            model="m",
            api_key=CONFIGURED,
            rate_limit=0,
            max_concurrency=1,
        )
    )


def body_with_key_at(offset: int, key: str, size: int) -> bytes:
    head = (FILLER * (offset // len(FILLER) + 1))[:offset]
    text = head + " " + key + " "
    return (text + FILLER * ((size - len(text)) // len(FILLER) + 2)).encode()


@pytest.mark.parametrize("kind", ["openai", "ollama", "anthropic"])
@pytest.mark.parametrize("name", list(KEYS))
def test_a_key_across_the_error_text_cut_is_never_shown_in_part(kind: str, name: str) -> None:
    key = KEYS[name]
    upstream = adapter(kind)
    for offset in range(MAX_ERROR_TEXT - len(key) - 4, MAX_ERROR_TEXT + 4):
        message = upstream.error_message(body_with_key_at(offset, key, MAX_ERROR_TEXT * 2))
        assert len(message) <= MAX_ERROR_TEXT
        assert not shown(message, key), (name, offset, message[-80:])


# Each adapter's error body, its message in the provider's own shape.
ERROR_BODIES = {
    "openai": lambda text: {"error": {"message": text, "type": "invalid_request_error"}},
    "anthropic": lambda text: {"type": "error", "error": {"type": "api_error", "message": text}},
    "ollama": lambda text: {"error": text},
}


@pytest.mark.parametrize("kind", list(ERROR_BODIES))
@pytest.mark.parametrize("name", ["configured", "openai", "bearer"])
def test_a_key_in_a_json_error_message_is_cut_like_any_text(kind: str, name: str) -> None:
    """The message taken out of a JSON error body obeys the same rule as a raw body: at most
    MAX_ERROR_TEXT characters, redacted before the cut."""
    key = KEYS[name]
    upstream = adapter(kind)
    for offset in range(MAX_ERROR_TEXT - len(key) - 4, MAX_ERROR_TEXT + 4):
        text = body_with_key_at(offset, key, MAX_ERROR_TEXT * 2).decode()
        message = upstream.error_message(json.dumps(ERROR_BODIES[kind](text)).encode())
        assert len(message) <= MAX_ERROR_TEXT
        assert not shown(message, key), (kind, name, offset, message[-80:])


@pytest.mark.parametrize("name", list(KEYS))
def test_a_key_across_the_error_body_cut_is_never_shown_in_part(name: str) -> None:
    """The body is read up to MAX_ERROR_BODY bytes: what lies past it is never shown at all,
    and the part before it is redacted before the text is cut."""
    key = KEYS[name]
    upstream = adapter()
    for offset in range(MAX_ERROR_BODY - len(key) - 4, MAX_ERROR_BODY + 4, 3):
        read = body_with_key_at(offset, key, MAX_ERROR_BODY * 2)[:MAX_ERROR_BODY]
        message = upstream.error_message(read)
        assert not shown(message, key), (name, offset)


@pytest.mark.parametrize("name", list(KEYS))
def test_shorten_redacts_then_cuts_at_every_offset(name: str) -> None:
    key = KEYS[name]
    redact = Redactor([CONFIGURED])
    for limit in range(1, 80):
        for offset in range(0, 60):
            text = "x " * (offset // 2) + " " + key + " tail"
            assert not shown(redact.shorten(text, limit), key), (name, limit, offset)


def test_the_old_order_would_have_shown_part_of_the_key() -> None:
    """Why the order matters: cut first, and a configured key is no longer whole, so it is not
    recognised (41 of its 42 characters were shown); a shape cut short of its minimum length
    is not either."""
    redact = Redactor([CONFIGURED])
    for key, kept in ((CONFIGURED, len(CONFIGURED) - 1), (KEYS["groq"], 4 + 7)):
        text = FILLER * 13 + " " + key
        limit = len(text) - len(key) + kept
        assert shown(redact(text[:limit]), key)
        assert not shown(redact.shorten(text, limit), key)


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ("Proxy-Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("authorization: Token abcdef0123456789", "abcdef0123456789"),
        ("http://user:hunter2-long@proxy:3128/x", "hunter2-long"),
        ("redis://:pa55word@cache:6379/0", "pa55word"),
    ],
)
def test_authorization_values_and_userinfo_passwords_are_redacted(text: str, gone: str) -> None:
    assert gone not in Redactor()(text)
