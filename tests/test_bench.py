"""The benchmark tools keep working (timings are reported, never asserted)."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from modelrouter.bench import chat_body, percentiles, run_load
from modelrouter.bench.suite import capacity, table
from modelrouter.bench.wrk import parse
from tests.conftest import Mock

WRK_OUTPUT = """Running 3s test @ http://127.0.0.1:9000/chat
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.20ms  500.00us  12.00ms   90.00%
  Latency Distribution
     50%    3.10ms
     75%    3.40ms
     90%    3.90ms
     99%  850.00us
  12000 requests in 3.00s, 4.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:   4000.00
"""


async def test_bench_command_runs_for_a_second_against_the_mock(mock: Mock) -> None:
    # A subprocess: the command runs its own event loop, as it does for users.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "modelrouter",
        "bench",
        "--url",
        mock.url,
        "--format",
        "openai",
        "--stream",
        "-c",
        "4",
        "-d",
        "1",
        "--json",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    summary = json.loads(out)
    assert summary["ok"] > 0
    assert summary["errors"] == {}
    assert set(summary["latency_ms"]) == {"p50", "p90", "p99", "mean"}
    assert "first_byte_ms" in summary


async def test_load_generator_counts_errors_by_kind(mock: Mock) -> None:
    result = await run_load(
        mock.base("status=503") + "/chat/completions",
        chat_body("openai", stream=False),
        concurrency=2,
        duration=5,
        requests=6,
    )
    assert result.requests == 6
    assert result.errors == {"http_503": 6}
    assert result.ok == 0


def test_bench_refuses_unbounded_runs() -> None:
    from modelrouter.cli import main

    assert main(["bench", "--duration", "0"]) == 2
    assert main(["bench", "--concurrency", "0"]) == 2


def test_wrk_output_is_parsed_into_marks_and_errors() -> None:
    m = parse(WRK_OUTPUT)
    assert m.requests == 12000
    assert m.p50 == pytest.approx(3.1)
    assert m.p99 == pytest.approx(0.85)
    assert m.errors == {"http_error": 5, "socket": 3}
    assert m.rate == pytest.approx((12000 - 8) / 3.0)


def test_percentiles_use_nearest_rank() -> None:
    marks = percentiles([i / 1000 for i in range(1, 101)])
    assert marks["p50"] == pytest.approx(50)
    assert marks["p99"] == pytest.approx(99)


def test_suite_table_shows_ratios_and_added_latency() -> None:
    direct = {
        "rate": 1000.0,
        "p50": 1.0,
        "p99": 2.0,
        "errors": {},
        "mean": 1.0,
        "first_byte_p50": 0.5,
    }
    routed = {
        "rate": 500.0,
        "p50": 1.5,
        "p99": 3.0,
        "errors": {},
        "mean": 1.1,
        "first_byte_p50": 0.7,
    }
    text = table(
        [
            {
                "scenario": "x",
                "direct": direct,
                "modelrouter": routed,
                "gateway_peak_rss_mb": 40.0,
                "gateway_cpu_ms_per_request": 0.2,
            }
        ],
        38.0,
    )
    assert " 0.50" in text
    assert "+0.500" in text
    assert "mean stream time ratio 1.100" in text


def test_bench_suite_runs_end_to_end_briefly(
    tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelrouter.bench import suite

    out = tmp_path / "bench.json"  # type: ignore[operator]
    code = suite.main(
        ["--seconds", "0.3", "--rounds", "1", "--open-streams", "20", "--json", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    for scenario in suite.SCENARIOS:
        assert scenario.name in printed
    figures = json.loads(out.read_text())
    assert figures["open_streams"]["streams_open"] == 20
    for result in figures["results"]:
        assert result["modelrouter"]["requests"] > 0
        assert result["direct"]["requests"] > 0
        assert result["mock_cpu_ms_per_request"] > 0, "the upstream's share was sampled"
        if result["tool"] == "wrk" and result["concurrency"] >= 16:
            assert result["client_cpu_ms_per_request"] > 0
            assert f"{result['scenario']}: CPU per request: gateway" in printed


def test_suite_table_compares_each_other_gateway_with_this_tree() -> None:
    direct = {"rate": 1000.0, "p50": 1.0, "p99": 2.0, "errors": {}}
    this = {"rate": 500.0, "p50": 1.5, "p99": 3.0, "errors": {}}
    parent = {"rate": 400.0, "p50": 1.7, "p99": 3.5, "errors": {}}
    row = {
        "scenario": "chat, 1 client",
        "direct": direct,
        "modelrouter": this,
        "gateway_peak_rss_mb": 40.0,
        "gateway_cpu_ms_per_request": 0.2,
        "others": {
            "HEAD~1": {
                "modelrouter": parent,
                "gateway_peak_rss_mb": 41.0,
                "gateway_cpu_ms_per_request": 0.25,
            }
        },
    }
    text = table([row], 38.0)
    assert "  HEAD~1 " in text
    assert "HEAD~1 against this tree: req/s x0.800, p50 +0.200 ms, CPU/req x1.250" in text


def test_capacity_is_what_the_cores_carry_at_the_summed_cost() -> None:
    result = {
        "scenario": "chat, 64 clients",
        "concurrency": 64,
        "gateway_cpu_ms_per_request": 0.15,
        "mock_cpu_ms_per_request": 0.08,
        "client_cpu_ms_per_request": 0.02,
    }
    one_client = {**result, "scenario": "chat, 1 client", "concurrency": 1}
    python_client = {**result, "client_cpu_ms_per_request": None}
    text = capacity([result, one_client, python_client], cores=2)
    assert text == (
        "chat, 64 clients: CPU per request: gateway 0.150 + mock 0.080 + wrk 0.020 ms; "
        "2 cores carry at most 8000/s through the gateway, however many workers\n"
    )


def test_other_gateways_are_also_compared_round_by_round() -> None:
    from modelrouter.bench.loadgen import Measurement
    from modelrouter.bench.suite import paired

    def run(rate: float, p50: float) -> Measurement:
        return Measurement(requests=1, rate=rate, p50=p50, p90=p50, p99=p50, errors={})

    this = [run(1000, 1.0), run(500, 2.0), run(900, 1.2)]  # round 2 ran during a hiccup
    redis = [run(950, 1.1), run(480, 2.05), run(880, 1.3)]
    rounds = paired(this, redis)["per_round"]
    assert rounds["rounds"] == 3
    assert rounds["rate_ratio_median"] == 0.96
    assert rounds["rate_ratio_range"] == [0.95, 0.9778]
    assert rounds["p50_added_ms_median"] == 0.1
    row = {
        "scenario": "chat, 1 client",
        "direct": {"rate": 2000.0, "p50": 0.5, "p99": 1.0, "errors": {}},
        "modelrouter": {"rate": 900.0, "p50": 1.2, "p99": 3.0, "errors": {}},
        "gateway_peak_rss_mb": 44.0,
        "gateway_cpu_ms_per_request": 0.5,
        "others": {
            "redis": {
                "modelrouter": {"rate": 880.0, "p50": 1.3, "p99": 3.1, "errors": {}},
                "gateway_peak_rss_mb": 52.0,
                "gateway_cpu_ms_per_request": 0.51,
                "per_round": rounds,
            }
        },
    }
    assert "; per round (median of 3): req/s x0.960, p50 +0.100 ms" in table([row], 44.0)
