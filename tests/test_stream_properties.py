"""Properties of the stream encodings, checked with generated input (hypothesis).

- The upstream framers (SSE, NDJSON): any split of the same bytes gives the same events.
- The `/stream` writer: a client that follows the seed's protocol (stop at `data: [DONE]`,
  join each event's data) gets every chunk's text back, whatever the text, `[DONE]` included.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelrouter.providers.framing import NDJSONFramer, SSEFramer
from modelrouter.web.sse import DONE, data_event
from tests.conftest import parse_sse

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Payload text: anything but the line breaks that frame it, and often the marker itself.
LINE_TEXT = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
    max_size=40,
) | st.sampled_from(["[DONE]", " [DONE] ", "data: [DONE]", "{}", ""])


def feed_in_pieces(framer: SSEFramer | NDJSONFramer, data: bytes, cuts: list[int]) -> list[bytes]:
    out: list[bytes] = []
    start = 0
    for cut in sorted(set(cuts)):
        out += framer.feed(data[start:cut])
        start = cut
    out += framer.feed(data[start:])
    return out + framer.finish()


@st.composite
def sse_stream(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A valid SSE stream (events of one or more data lines, comments, other fields, either
    line ending, the final blank line sometimes missing) and the data of its events."""
    end = draw(st.sampled_from(["\n", "\r\n"]))
    parts: list[str] = []
    expected: list[bytes] = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            parts.append(": keep-alive" + end)
        if draw(st.booleans()):
            parts.append("event: message" + end)
        values = []
        for line in draw(st.lists(LINE_TEXT, min_size=1, max_size=3)):
            value = draw(st.sampled_from(["", " "])) + line
            parts.append(f"data:{value}{end}")
            values.append(value[1:] if value.startswith(" ") else value)
        parts.append(end)
        expected.append("\n".join(values).encode())
    text = "".join(parts)
    if parts and draw(st.booleans()):
        text = text[: -len(end)]  # the stream ends without the last blank line
    return text.encode(), expected


@SETTINGS
@given(sse_stream(), st.lists(st.integers(0, 2000), max_size=12))
def test_sse_framer_gives_the_same_events_for_any_split(
    stream: tuple[bytes, list[bytes]], cuts: list[int]
) -> None:
    data, expected = stream
    assert feed_in_pieces(SSEFramer(), data, []) == expected
    assert feed_in_pieces(SSEFramer(), data, cuts) == expected
    assert feed_in_pieces(SSEFramer(), data, list(range(len(data)))) == expected  # byte by byte


@SETTINGS
@given(
    st.lists(LINE_TEXT, max_size=8),
    st.sampled_from(["\n", "\r\n"]),
    st.booleans(),
    st.lists(st.integers(0, 2000), max_size=12),
)
def test_ndjson_framer_gives_the_same_lines_for_any_split(
    lines: list[str], end: str, last_newline: bool, cuts: list[int]
) -> None:
    text = end.join(lines) + (end if last_newline else "")
    data = text.encode()
    whole = feed_in_pieces(NDJSONFramer(), data, [])
    assert whole == [line.encode() for line in lines if line.encode().strip()]
    assert feed_in_pieces(NDJSONFramer(), data, cuts) == whole
    assert feed_in_pieces(NDJSONFramer(), data, list(range(len(data)))) == whole


CHUNK_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30
) | st.sampled_from(
    ["[DONE]", "[DONE]\n", "\n[DONE]", " [DONE]\t", "a\r\n[DONE]\rb", "[DONE][DONE]"]
)


@SETTINGS
@given(st.lists(CHUNK_TEXT, max_size=6))
def test_stream_text_comes_back_whole_and_only_the_end_reads_done(texts: list[str]) -> None:
    body = b"".join(data_event(text) for text in texts) + DONE
    lines = body.decode().split("\n")
    markers = [i for i, line in enumerate(lines) if line.strip() in ("data: [DONE]", "data:[DONE]")]
    assert markers == [len(lines) - 3]  # only the real end (then the blank line)
    events = parse_sse(body.decode())
    assert events[-1] == ("message", "[DONE]")
    normalised = [t.replace("\r\n", "\n").replace("\r", "\n") for t in texts]
    assert "".join(data for _, data in events[:-1]) == "".join(normalised)


@pytest.mark.parametrize(
    ("text", "sent"),
    [
        ("[DONE]", b"data: [DON\n\ndata: E]\n\n"),
        ("a\n[DONE]", b"data: a\ndata: [DON\n\ndata: E]\n\n"),
        (" [DONE] ", b"data:  [DON\n\ndata: E] \n\n"),
        ("x[DONE]", b"data: x[DONE]\n\n"),
        ("plain", b"data: plain\n\n"),
    ],
)
def test_a_chunk_reading_done_is_never_sent_as_the_end_marker(text: str, sent: bytes) -> None:
    assert data_event(text) == sent
