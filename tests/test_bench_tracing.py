"""`bench.instructions --tracing RATIO`: the gateway's environment turns traces on at that
ratio, exported to a sink of the bench's own that takes every export and counts its spans."""

from __future__ import annotations

import gzip
import http.client
import math
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from modelrouter.bench.instructions import (
    EVEN_DRAWS,
    NO_TIMER_MS,
    Count,
    Exported,
    _summaries,
    hash_seed_env,
    main,
    otlp_sink,
    tracing_env,
)
from modelrouter.config import load_settings
from modelrouter.config.tracing import MAX_MILLIS


def _export(spans: int) -> bytes:
    message = ExportTraceServiceRequest()
    scope = message.resource_spans.add().scope_spans.add()
    for index in range(spans):
        scope.spans.add(name=f"span {index}")
    return gzip.compress(message.SerializeToString())


def test_the_sink_counts_exports_and_spans_on_one_kept_alive_connection() -> None:
    with otlp_sink() as sink:
        address = urlsplit(sink.endpoint)
        assert address.hostname == "127.0.0.1"
        assert address.port is not None
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=5)
        headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
        for spans in (2, 3):
            connection.request("POST", "/v1/traces", _export(spans), headers)
            response = connection.getresponse()
            response.read()
            assert response.status == 200
        # Both exports went over the first connection: the sink keeps it alive, as a collector.
        assert connection.sock is not None
        connection.close()
        assert sink.exported() == Exported(exports=2, spans=5)


def test_the_settings_sample_at_the_ratio_and_export_without_a_timer() -> None:
    tracing = load_settings(tracing_env("http://127.0.0.1:9", 0.01)).tracing
    assert tracing.enabled
    assert (tracing.sampler, tracing.sampler_arg) == ("parentbased_traceidratio", 0.01)
    # Exports come from full batches and the shutdown's flush, never from the worker's timer.
    assert tracing.schedule_delay_ms == NO_TIMER_MS == MAX_MILLIS


def test_a_ratio_out_of_bounds_is_refused() -> None:
    assert main(["--tracing", "2"]) == 2


def test_each_threads_summary_is_read_and_the_main_thread_is_the_first(tmp_path: Path) -> None:
    (tmp_path / "callgrind.out").write_bytes(b"")  # what callgrind leaves under the plain name
    (tmp_path / "callgrind.out-01").write_bytes(b"events: Ir\nsummary: 700\n")
    (tmp_path / "callgrind.out-02").write_bytes(b"events: Ir\nsummary: 50\n")
    counts = _summaries(str(tmp_path))
    assert counts == {"callgrind.out-01": 700, "callgrind.out-02": 50}
    assert Count(sum(counts.values()), counts["callgrind.out-01"]) == (750, 700, 0)


@pytest.mark.parametrize("ratio", [0.0, 0.003, 0.01, 0.5, 1.0])
def test_the_sampling_draws_keep_exactly_the_ratio_of_any_run(ratio: float) -> None:
    draws = eval(EVEN_DRAWS, {"math": math, "r": ratio})
    assert all(0.0 <= draw < 1.0 for draw in draws)
    for few, many in ((0, 100), (200, 800), (300, 1300), (1000, 100_000)):
        kept = sum(draw < ratio for draw in draws[few:many])
        assert kept == math.floor(many * ratio) - math.floor(few * ratio)


def test_the_gateways_hash_seed_is_fixed_unless_asked_random() -> None:
    """One PYTHONHASHSEED for every gateway of a run (the few and the many, both revisions):
    a run's dictionary and attribute-cache layout is then not a difference between them."""
    assert hash_seed_env("1") == {"PYTHONHASHSEED": "1"}
    assert hash_seed_env("007") == {"PYTHONHASHSEED": "7"}
    assert hash_seed_env("random") == {}
    for bad in ("-1", "x", "4294967296", ""):
        with pytest.raises(ValueError, match="--hash-seed"):
            hash_seed_env(bad)
    assert main(["--hash-seed", "x"]) == 2
