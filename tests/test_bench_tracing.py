"""`bench.instructions --tracing RATIO`: the gateway's environment turns traces on at that
ratio, exported to a sink of the bench's own that takes every export."""

from __future__ import annotations

import http.client
from pathlib import Path
from urllib.parse import urlsplit

from modelrouter.bench.instructions import Count, _summaries, main, otlp_sink, tracing_env
from modelrouter.config import load_settings


def test_the_sink_takes_an_export_and_the_settings_sample_at_the_ratio() -> None:
    with otlp_sink() as endpoint:
        env = tracing_env(endpoint, 0.01)
        address = urlsplit(endpoint)
        assert address.hostname == "127.0.0.1"
        assert address.port is not None
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=5)
        connection.request("POST", "/v1/traces", b"\x0a\x00", {"Content-Length": "2"})
        assert connection.getresponse().status == 200
        connection.close()
    tracing = load_settings(env).tracing
    assert tracing.enabled
    assert (tracing.sampler, tracing.sampler_arg) == ("parentbased_traceidratio", 0.01)


def test_a_ratio_out_of_bounds_is_refused() -> None:
    assert main(["--tracing", "2"]) == 2


def test_each_threads_summary_is_read_and_the_main_thread_is_the_first(tmp_path: Path) -> None:
    (tmp_path / "callgrind.out").write_bytes(b"")  # what callgrind leaves under the plain name
    (tmp_path / "callgrind.out-01").write_bytes(b"events: Ir\nsummary: 700\n")
    (tmp_path / "callgrind.out-02").write_bytes(b"events: Ir\nsummary: 50\n")
    counts = _summaries(str(tmp_path))
    assert counts == {"callgrind.out-01": 700, "callgrind.out-02": 50}
    assert Count(sum(counts.values()), counts["callgrind.out-01"]) == (750, 700)
