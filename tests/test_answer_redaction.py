"""Answer text loses the configured secrets, whole or however it is cut into chunks, and a
stream holds back no more than the longest secret's length less one character."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from modelrouter.answer_redaction import PASS_THROUGH, SecretText
from modelrouter.redact import REDACTED, Redactor
from tests.conftest import GROQ_KEY, Gateway, Mock, two_providers

KEY = "gsk_Q7fX2mZp9LwR4tYv8NbK"

# A small alphabet, so that secrets share beginnings, overlap and hide in the filler. No
# capital letter and no bracket: no secret can be made of the mark and the text around it.
ALPHABET = "abcxyz-_01 é🙂\n"
SECRET = st.text(alphabet="abcxyz-_01", min_size=4, max_size=12)


@st.composite
def secret_sets(draw: st.DrawFn) -> list[str]:
    """Up to four secrets; some made of another (inside it, or it extended), since a secret
    within a longer one is where deciding too early goes wrong."""
    secrets = [draw(SECRET)]
    for _ in range(draw(st.integers(0, 3))):
        other = draw(st.sampled_from(secrets))
        start = draw(st.integers(0, len(other) - 4))
        inside = other[start : draw(st.integers(start + 4, len(other)))]
        secrets.append(draw(st.sampled_from([draw(SECRET), inside, other + draw(SECRET)])))
    return secrets


def leftmost_longest(text: str, secrets: list[str]) -> str:
    """The meaning of redaction, written out slowly: from left to right, the longest secret
    that begins at a position is replaced, and the scan goes on after it."""
    ordered = sorted(set(secrets), key=len, reverse=True)
    out: list[str] = []
    at = 0
    while at < len(text):
        for secret in ordered:
            if text.startswith(secret, at):
                out.append(REDACTED)
                at += len(secret)
                break
        else:
            out.append(text[at])
            at += 1
    return "".join(out)


@st.composite
def answers(draw: st.DrawFn) -> tuple[list[str], str, list[str]]:
    """Secrets; a text with some of them (or their beginnings) at random offsets; its chunks."""
    secrets = draw(secret_sets())
    pieces = draw(st.lists(st.text(alphabet=ALPHABET, max_size=20), min_size=1, max_size=8))
    text = pieces[0]
    for piece in pieces[1:]:
        secret = draw(st.sampled_from(secrets))
        whole = draw(st.booleans())
        text += (secret if whole else secret[: draw(st.integers(1, len(secret)))]) + piece
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=12)))
    bounds = [0, *cuts, len(text)]
    chunks = [text[a:b] for a, b in itertools.pairwise(bounds)]
    return secrets, text, chunks


@settings(max_examples=300, deadline=None)
@given(answers())
def test_a_streamed_answer_is_redacted_as_the_whole_text_is_and_holds_back_little(
    case: tuple[list[str], str, list[str]],
) -> None:
    secrets, text, chunks = case
    redactor = Redactor(secrets)
    stream = redactor.stream()
    longest = max(len(secret) for secret in secrets)
    released: list[str] = []
    for chunk in chunks:
        released.append(stream.feed(chunk))
        assert len(stream.held) <= longest - 1
    released.append(stream.flush())
    assert stream.held == ""
    whole = redactor.answer(text)
    assert "".join(released) == whole == leftmost_longest(text, secrets)
    for secret in secrets:
        assert secret not in whole


@settings(max_examples=200, deadline=None)
@given(answers(), st.sampled_from([0, 6]))
def test_secrets_too_long_for_the_one_pattern_are_held_back_alike(
    case: tuple[list[str], str, list[str]], nested_max: int
) -> None:
    secrets, text, chunks = case
    stream = SecretText(secrets, mark=REDACTED, nested_max=nested_max).stream()
    longest = max(len(secret) for secret in secrets)
    released: list[str] = []
    for chunk in chunks:
        released.append(stream.feed(chunk))
        assert len(stream.held) <= longest - 1
    released.append(stream.flush())
    assert "".join(released) == leftmost_longest(text, secrets)


def test_a_secret_of_thousands_of_characters_is_redacted_across_chunks() -> None:
    secret = "k" * 2999 + "!"
    stream = Redactor([secret]).stream()
    out = stream.feed("key: " + secret[:1500]) + stream.feed(secret[1500:] + " end")
    assert out + stream.flush() == f"key: {REDACTED} end"


def test_without_a_configured_secret_a_stream_passes_text_on_and_costs_no_object() -> None:
    stream = Redactor().stream()
    assert stream is PASS_THROUGH
    assert stream.feed(f"echoing {KEY}") == f"echoing {KEY}"
    assert stream.flush() == ""
    assert Redactor().answer(KEY) == KEY


def test_a_secret_cut_across_chunks_is_redacted_whole() -> None:
    stream = Redactor([KEY]).stream()
    out = stream.feed(f"your key is {KEY[:5]}") + stream.feed(KEY[5:12])
    assert out == "your key is "  # the beginning of the key waits for what follows
    out += stream.feed(f"{KEY[12:]}, keep it safe") + stream.flush()
    assert out == f"your key is {REDACTED}, keep it safe"


def test_text_that_cannot_begin_a_secret_is_released_at_once() -> None:
    stream = Redactor([KEY]).stream()
    assert stream.feed("Hello there, ") == "Hello there, "
    assert stream.held == ""
    assert stream.feed("what a nice day: g") == "what a nice day: "
    assert stream.held == "g"


def test_a_held_tail_that_never_becomes_a_secret_is_released_by_flush() -> None:
    stream = Redactor([KEY]).stream()
    assert stream.feed(f"almost {KEY[:-1]}") == "almost "
    assert stream.flush() == KEY[:-1]


def test_only_configured_secrets_are_matched_exactly_not_shapes_or_other_cases() -> None:
    # Credential shapes are ordinary words in an answer about code; case is exact.
    text = f"use sk-abcdefghijklmnop or Bearer abcdefgh12345678, not {KEY.lower()}"
    assert Redactor([KEY]).answer(text) == text
    assert Redactor([KEY]).answer(f"[{KEY}]") == f"[{REDACTED}]"


def test_a_stream_keeps_the_secrets_it_was_made_with() -> None:
    redactor = Redactor([KEY])
    stream = redactor.stream()
    redactor.remove([KEY])
    assert stream.feed(KEY) + stream.flush() == REDACTED
    assert redactor.stream() is PASS_THROUGH


def test_a_secret_inside_a_longer_one_waits_until_the_longer_one_is_decided() -> None:
    stream = Redactor(["abcdefgh", "cdef"]).stream()
    assert stream.feed("x abcdef") == "x "  # "cdef" is whole, but "abcdefgh" may follow
    assert stream.feed("gh y") == f"{REDACTED} y"
    assert stream.feed(" abcdef!") == f" ab{REDACTED}!"


# -- through the gateway: what a client receives ---------------------------------------------------
async def test_a_provider_echoing_its_key_reaches_the_client_redacted(
    gateway: Gateway, mock: Mock
) -> None:
    """The mock echoes the prompt word by word, so the key arrives cut across chunks."""
    client = await gateway(**two_providers(mock, groq="echo=1"))
    body = {"messages": [{"role": "user", "content": f"my key is {GROQ_KEY} ok"}]}
    whole = await client.post("/chat", json=body)
    text = (await whole.json())["text"]
    assert GROQ_KEY not in text
    assert "[REDACTED]" in text
    assert text.endswith("ok")
    stream = await client.post("/stream", json=body)
    raw = await stream.text()
    assert GROQ_KEY not in raw
    assert "[REDACTED]" in raw
    v1 = await client.post("/v1/chat/completions", json={**body, "model": "auto", "stream": True})
    assert GROQ_KEY not in await v1.text()


def test_an_answer_is_redacted_of_what_its_upstream_received_and_nothing_else() -> None:
    from modelrouter.config import load_settings, upstream_secrets

    settings = load_settings(
        {
            "API_KEY": "client-key-0001",
            "PROVIDER_ORDER": "groq,ollama",
            "GROQ_API_KEY": GROQ_KEY,
            "OLLAMA_BASE_URL": "http://user:pa55word@127.0.0.1:11434",
        }
    )
    groq, ollama = settings.providers
    assert upstream_secrets(groq) == [GROQ_KEY]
    assert "pa55word" in upstream_secrets(ollama)
    secrets = upstream_secrets(groq) + upstream_secrets(ollama)
    assert "client-key-0001" not in secrets, "a client key never reaches an upstream"
