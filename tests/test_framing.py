"""Incremental framing of upstream streams: Server-Sent Events and newline-delimited JSON."""

from __future__ import annotations

import pytest

from modelrouter.providers import framing
from modelrouter.providers.framing import FramingError, NDJSONFramer, SSEFramer

Framer = SSEFramer | NDJSONFramer


def feed_all(framer: Framer, data: bytes, step: int | None = None) -> list[bytes]:
    """Feed `data` in reads of `step` bytes (all at once by default), then finish."""
    step = step or max(len(data), 1)
    out: list[bytes] = []
    for start in range(0, len(data), step):
        out += framer.feed(data[start : start + step])
    return out + framer.finish()


STEPS = pytest.mark.parametrize("step", [1, 2, 3, 7, None], ids=["1", "2", "3", "7", "whole"])


# --- SSE ---------------------------------------------------------------------------------------


@STEPS
def test_sse_yields_the_data_of_each_event(step: int | None) -> None:
    data = b'data: {"a": 1}\n\ndata: {"b": 2}\n\ndata: [DONE]\n\n'
    assert feed_all(SSEFramer(), data, step) == [b'{"a": 1}', b'{"b": 2}', b"[DONE]"]


def test_sse_joins_a_line_split_across_reads() -> None:
    framer = SSEFramer()
    assert framer.feed(b"da") == []
    assert framer.feed(b"ta: hel") == []
    assert framer.feed(b"lo\n") == []
    assert framer.feed(b"\n") == [b"hello"]
    assert framer.finish() == []


def test_sse_returns_an_event_as_soon_as_its_blank_line_arrives() -> None:
    framer = SSEFramer()
    assert framer.feed(b"data: one\n\ndata: two\n") == [b"one"]
    assert framer.feed(b"\n") == [b"two"]


@STEPS
def test_sse_skips_comment_lines(step: int | None) -> None:
    data = b": keep-alive\n\n: OPENROUTER PROCESSING\ndata: x\n: in between\n\n"
    assert feed_all(SSEFramer(), data, step) == [b"x"]


@STEPS
def test_sse_accepts_crlf_line_ends(step: int | None) -> None:
    data = b"data: one\r\n\r\n: note\r\ndata: two\r\n\r\n"
    assert feed_all(SSEFramer(), data, step) == [b"one", b"two"]


def test_sse_accepts_a_crlf_split_between_reads() -> None:
    framer = SSEFramer()
    assert framer.feed(b"data: one\r") == []
    assert framer.feed(b"\n\r") == []
    assert framer.feed(b"\n") == [b"one"]


def test_sse_final_event_without_blank_line_is_returned_by_finish() -> None:
    framer = SSEFramer()
    assert framer.feed(b"data: first\n\ndata: last\n") == [b"first"]
    assert framer.finish() == [b"last"]


def test_sse_final_line_without_newline_is_returned_by_finish() -> None:
    framer = SSEFramer()
    assert framer.feed(b"data: [DONE]") == []
    assert framer.finish() == [b"[DONE]"]


@STEPS
def test_sse_joins_multi_line_data_with_newlines(step: int | None) -> None:
    data = b"data: line one\ndata: line two\ndata:line three\n\n"
    assert feed_all(SSEFramer(), data, step) == [b"line one\nline two\nline three"]


def test_sse_accepts_data_without_a_space_after_the_colon() -> None:
    assert feed_all(SSEFramer(), b'data:{"a":1}\n\n') == [b'{"a":1}']


def test_sse_removes_only_one_leading_space_of_data() -> None:
    assert feed_all(SSEFramer(), b"data:  indented\n\n") == [b" indented"]


@STEPS
def test_sse_ignores_event_id_and_retry_lines(step: int | None) -> None:
    data = b"event: message\nid: 42\nretry: 1000\ndata: payload\n\nevent: ping\n\n"
    assert feed_all(SSEFramer(), data, step) == [b"payload"]


def test_sse_blank_lines_alone_yield_nothing() -> None:
    assert feed_all(SSEFramer(), b"\n\n\r\n\n") == []


def test_sse_empty_input_yields_nothing() -> None:
    framer = SSEFramer()
    assert framer.feed(b"") == []
    assert framer.finish() == []


def test_sse_keeps_payload_bytes_as_they_are() -> None:
    payload = '{"content": "wörld 🙂"}'.encode()
    assert feed_all(SSEFramer(), b"data: " + payload + b"\n\n", 1) == [payload]


def test_sse_finish_resets_a_pending_event() -> None:
    framer = SSEFramer()
    framer.feed(b"data: half\n")
    assert framer.finish() == [b"half"]
    assert framer.finish() == []
    assert feed_all(framer, b"data: next\n\n") == [b"next"]


# --- NDJSON ------------------------------------------------------------------------------------


@STEPS
def test_ndjson_yields_each_line(step: int | None) -> None:
    data = b'{"a": 1}\n{"b": 2}\n{"done": true}\n'
    assert feed_all(NDJSONFramer(), data, step) == [b'{"a": 1}', b'{"b": 2}', b'{"done": true}']


def test_ndjson_joins_a_line_split_across_reads() -> None:
    framer = NDJSONFramer()
    assert framer.feed(b'{"mess') == []
    assert framer.feed(b'age": "hi"}') == []
    assert framer.feed(b"\n{") == [b'{"message": "hi"}']
    assert framer.feed(b"}\n") == [b"{}"]


@STEPS
def test_ndjson_accepts_crlf_line_ends(step: int | None) -> None:
    assert feed_all(NDJSONFramer(), b"{}\r\n[]\r\n", step) == [b"{}", b"[]"]


def test_ndjson_final_line_without_newline_is_returned_by_finish() -> None:
    framer = NDJSONFramer()
    assert framer.feed(b'{"a": 1}\n{"done": true}') == [b'{"a": 1}']
    assert framer.finish() == [b'{"done": true}']


def test_ndjson_final_line_with_crlf_but_no_newline_loses_its_cr() -> None:
    framer = NDJSONFramer()
    framer.feed(b'{"done": true}\r')
    assert framer.finish() == [b'{"done": true}']


@STEPS
def test_ndjson_skips_blank_lines(step: int | None) -> None:
    assert feed_all(NDJSONFramer(), b"\n{}\n\n  \n\r\n{}\n\n", step) == [b"{}", b"{}"]


def test_ndjson_empty_input_yields_nothing() -> None:
    framer = NDJSONFramer()
    assert framer.feed(b"") == []
    assert framer.finish() == []


def test_ndjson_whitespace_only_tail_yields_nothing() -> None:
    framer = NDJSONFramer()
    framer.feed(b"{}\n   ")
    assert framer.finish() == []


# --- The line size limit -----------------------------------------------------------------------


@pytest.fixture
def small_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(framing, "MAX_LINE_BYTES", 32)
    return 32


@pytest.mark.parametrize("make", [SSEFramer, NDJSONFramer])
def test_a_line_over_the_size_limit_is_a_framing_error(small_limit: int, make: type) -> None:
    framer = make()
    for _ in range(small_limit // 4 - 2):
        framer.feed(b"x" * 4)  # 4 * (32 / 4 - 2) = 24 bytes: still under the limit
    framer.feed(b"data: ")  # 30 bytes
    with pytest.raises(FramingError):
        framer.feed(b"xxx")  # 33 bytes without a newline


@pytest.mark.parametrize("make", [SSEFramer, NDJSONFramer])
def test_a_line_at_the_size_limit_is_accepted(small_limit: int, make: type) -> None:
    line = b"data:" + b"y" * (small_limit - 5)
    assert len(line) == small_limit
    out = feed_all(make(), line + b"\n\n", 1)
    assert out == [line[5:] if make is SSEFramer else line]


@pytest.mark.parametrize("make", [SSEFramer, NDJSONFramer])
def test_many_short_lines_do_not_trip_the_size_limit(small_limit: int, make: type) -> None:
    data = b"data: short\n\n" * (small_limit * 4)
    assert len(feed_all(make(), data, 5)) == small_limit * 4


def test_framing_error_is_a_value_error() -> None:
    assert issubclass(FramingError, ValueError)


@pytest.mark.parametrize("make", [SSEFramer, NDJSONFramer])
def test_a_line_over_the_size_limit_is_refused_even_when_it_arrives_in_one_read(
    small_limit: int, make: type
) -> None:
    with pytest.raises(FramingError):
        make().feed(b"data: " + b"z" * (small_limit * 2) + b"\n\n")


def test_an_sse_event_that_never_ends_is_refused_past_the_size_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from modelrouter.providers import framing

    monkeypatch.setattr(framing, "MAX_LINE_BYTES", 64)
    framer = framing.SSEFramer()
    for _ in range(3):
        framer.feed(b"data: 0123456789\n")
    with pytest.raises(framing.FramingError):
        framer.feed(b"data: 0123456789\n" * 4)
