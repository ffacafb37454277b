"""The benchmark tools keep working (timings are reported, never asserted)."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

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
    # The Redis rows have a test of their own (below).
    code = suite.main(
        [
            *("--seconds", "0.3", "--rounds", "1", "--open-streams", "20"),
            "--no-redis",
            "--json",
            str(out),
        ]
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
    assert rounds["rate_ratios"] == [0.95, 0.96, 0.9778], "each round's ratio, in round order"
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
    assert (
        "; per round (median of 3): req/s x0.960, p50 +0.100 ms; rounds x0.950 x0.960 x0.978"
        in table([row], 44.0)
    )


# -- Redis measured where it is paid ------------------------------------------------------------


def test_bench_providers_have_a_rate_limit_and_streams_a_cap_that_no_run_reaches() -> None:
    from modelrouter.bench.redis_rows import RATE_LIMIT, STREAM_CAP
    from modelrouter.bench.suite import gateway_env
    from modelrouter.config import load_settings

    settings = load_settings(gateway_env("http://127.0.0.1:9"))
    measured = {p.name: p.rate_limit for p in settings.providers if p.name != "ollama"}
    # Every request pays the rate script (a limit above 0) and none is refused (burst = limit).
    assert measured == {"groq": RATE_LIMIT, "openrouter": RATE_LIMIT, "openai": RATE_LIMIT}
    assert RATE_LIMIT >= 1_000_000
    assert settings.max_concurrent_streams == STREAM_CAP >= 10_000
    unlimited = load_settings(gateway_env("http://127.0.0.1:9", rate_limit=0))
    assert {p.rate_limit for p in unlimited.providers} == {0}


def test_redis_url_goes_through_the_proxy_with_its_credentials_and_database() -> None:
    from modelrouter.bench.redis_rows import proxy_target, through_proxy

    url = "redis://user:s3cret@127.0.0.1:6380/15"
    assert proxy_target(url) == ("127.0.0.1", 6380)
    assert through_proxy(url, 9999) == "redis://user:s3cret@127.0.0.1:9999/15"
    assert through_proxy("redis://localhost/2", 9999) == "redis://127.0.0.1:9999/2"
    assert proxy_target("redis://localhost/2") == ("localhost", 6379)


@pytest.mark.parametrize(
    "url",
    [
        "unix:///run/redis.sock?db=1",
        "redis+sentinel://127.0.0.1:26379/mymaster",
        "redis://10.1.2.3:6379/0",
        "redis://redis.example.com:6379/0",
    ],
)
def test_delay_proxy_takes_one_redis_server_on_loopback_only(url: str) -> None:
    from modelrouter.bench.redis_rows import proxy_target

    with pytest.raises(ValueError, match="delay proxy"):
        proxy_target(url)


def test_delay_proxy_refuses_a_target_off_loopback_or_a_delay_out_of_bounds() -> None:
    from modelrouter.bench.delay import DelayProxy, main

    with pytest.raises(ValueError, match="loopback"):
        DelayProxy(("192.0.2.1", 6379), delay=0.001)
    with pytest.raises(ValueError, match="delay"):
        DelayProxy(("127.0.0.1", 6379), delay=1.0)
    with pytest.raises(SystemExit):
        main(["--port", "0", "--target", "192.0.2.1:6379"])


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def test_delay_proxy_relays_every_byte_both_ways_in_order() -> None:
    from modelrouter.bench.delay import DelayProxy

    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    target = server.sockets[0].getsockname()[:2]
    proxy = DelayProxy(target, delay=0.001, max_buffered=4096)  # small: the reader pauses
    port = await proxy.start(0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sent = b"".join(i.to_bytes(4, "big") for i in range(50_000))  # 200 KB, numbered

        async def send() -> None:
            for start in range(0, len(sent), 1000):
                writer.write(sent[start : start + 1000])
                await writer.drain()

        _, received = await asyncio.wait_for(
            asyncio.gather(send(), reader.readexactly(len(sent))), 30
        )
        assert received == sent
        writer.close()
        assert await asyncio.wait_for(reader.read(), 30) == b"", "the close went through too"
    finally:
        await proxy.close()
        server.close()
        await server.wait_closed()


async def test_delay_proxy_closes_the_client_when_its_target_does_not_answer() -> None:
    from modelrouter.bench.delay import DelayProxy
    from modelrouter.bench.procs import free_port

    proxy = DelayProxy(("127.0.0.1", free_port()), delay=0.001)  # nothing listens there
    port = await proxy.start(0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PING\r\n")
        assert await asyncio.wait_for(reader.read(), 30) == b""
        writer.close()
    finally:
        await proxy.close()


def test_suite_table_reads_the_delayed_gateway_against_redis_with_its_proxy_cpu() -> None:
    def figures(rate: float, cpu: float, **extra: Any) -> dict[str, Any]:
        run = {"rate": rate, "p50": 10.0, "p99": 20.0, "errors": {}}
        base = {"modelrouter": run, "gateway_peak_rss_mb": 50.0}
        return base | {"gateway_cpu_ms_per_request": cpu} | extra

    rounds = {"rounds": 2, "rate_ratio_median": 0.9, "p50_added_ms_median": 1.0}
    row = {
        "scenario": "chat, 64 clients",
        "direct": {"rate": 9000.0, "p50": 5.0, "p99": 9.0, "errors": {}},
        **figures(6000.0, 0.3),
        "others": {
            "redis": figures(5400.0, 0.33, per_round=rounds),
            "redis +1ms": figures(
                4860.0,
                0.36,
                per_round=rounds,
                versus={"label": "redis", **rounds, "rate_ratios": [0.88, 0.92]},
                proxy_cpu_ms_per_request=0.05,
            ),
        },
    }
    row["others"]["redis +1ms"]["modelrouter"]["errors"] = {"http_error": 3}
    text = table([row], 50.0)
    assert (
        "redis +1ms against redis: per round (median of 2): req/s x0.900, p50 +1.000 ms; "
        "rounds x0.880 x0.920"
    ) in text
    assert "redis +1ms: delay proxy CPU 0.050 ms/req, beside the gateway's 0.360" in text
    assert "redis +1ms errors: {'http_error': 3}" in text


def test_settings_say_what_each_request_paid_and_the_redis_round_trips() -> None:
    from modelrouter.bench.report import settings_lines

    text = settings_lines(
        {
            "rate_limit": 10_000_000,
            "stream_cap": 100_000,
            "redis_delay_ms": 1.0,
            "redis_round_trip_ms": {"direct": 0.09, "through the delay proxy": 1.3},
        }
    )
    assert "rate limit 10000000/min (every request pays the rate script" in text
    assert "MAX_CONCURRENT_STREAMS 100000 (every stream pays a lease)" in text
    assert "direct 0.090 ms, through the delay proxy 1.300 ms" in text
    assert "+1 ms on the way to Redis (replies at once), so +1 ms per round trip" in text
    assert "no rate script" in settings_lines({"rate_limit": 0, "stream_cap": 10})


def test_a_redis_gateway_that_fell_back_or_refused_requests_is_called_out() -> None:
    from modelrouter.bench.status import warnings

    clean = {"state_backend": "redis", "redis_errors": 0, "limit_rejections": 0}
    found = {
        "modelrouter": {**clean, "state_backend": "memory"},
        "redis": clean,
        "redis +1ms": {**clean, "state_backend": "degraded", "redis_errors": 4},
        "history": {**clean, "state_backend": "memory", "limit_rejections": 2},
        "HEAD~1": {"unavailable": "URLError: refused"},
    }
    text = warnings(found, redis_labels={"redis", "redis +1ms"})
    assert text.splitlines() == [
        "note: redis +1ms: state backend degraded at the end; 4 Redis calls failed (local "
        "state meanwhile)",
        "note: history: 2 requests refused by our own limits",
        "note: HEAD~1: no status after the rounds (URLError: refused)",
    ]


def test_suite_refuses_unknown_scenarios_and_delays_out_of_bounds() -> None:
    from modelrouter.bench import suite

    with pytest.raises(SystemExit):
        suite.parse_args(["--scenario", "no such scenario", "--no-redis"])
    with pytest.raises(SystemExit):
        suite.parse_args(["--redis-delay-ms", "500", "--no-redis"])
    with pytest.raises(SystemExit):
        suite.parse_args(["--rate-limit", "-1", "--no-redis"])
    assert [s.name for s in suite.chosen(["64 clients"])] == [
        "chat, 64 clients",
        "stream 20 tokens, 64 clients",
    ]


def test_bench_suite_runs_memory_redis_and_delayed_redis_in_the_same_rounds(
    tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelrouter.bench import suite
    from modelrouter.bench.redis_rows import redis_answers, redis_url

    if not redis_answers(redis_url()):
        pytest.skip("no Redis at REDIS_URL (else 127.0.0.1:6379 db 15)")
    out = tmp_path / "bench.json"  # type: ignore[operator]
    args = ["--redis", "--scenario", "chat, 64 clients", "--rounds", "2", "--seconds", "0.3"]
    assert suite.main([*args, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    figures = json.loads(out.read_text())
    trips = figures["settings"]["redis_round_trip_ms"]
    assert set(trips) == {"direct", "through the delay proxy"}
    (result,) = figures["results"]
    assert set(result["others"]) == {"redis", "redis +1ms"}
    delayed = result["others"]["redis +1ms"]
    assert delayed["versus"]["label"] == "redis"
    assert len(delayed["versus"]["rate_ratios"]) == 2
    assert len(result["others"]["redis"]["per_round"]["rate_ratios"]) == 2
    assert delayed["proxy_cpu_ms_per_request"] > 0, "the delay proxy's CPU was sampled"
    for run in (result["modelrouter"], *(o["modelrouter"] for o in result["others"].values())):
        assert run["requests"] > 0
        assert run["errors"] == {}, "the rate limit refused nothing"
    for label in ("redis", "redis +1ms"):
        status = figures["gateways"][label]
        assert status["state_backend"] == "redis", f"{label} stayed on Redis"
        assert status["redis_errors"] == 0
        # The budget gauge is set only where a limited provider admitted requests.
        assert "groq" in status["rate_paid_by"]
    assert figures["gateways"]["modelrouter"]["state_backend"] == "memory"
    assert "redis +1ms against redis: per round (median of 2)" in printed
    assert "redis +1ms: delay proxy CPU" in printed
    assert "note:" not in printed.replace("note: wrk not found", "")


async def test_bench_suite_runs_a_virtual_key_row(
    tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--keys DATABASE_URL`: a gateway whose every request carries a virtual key with an rpm,
    a tpm and a budget that no run reaches: served, never refused."""
    from modelrouter.bench import suite
    from tests.history.conftest import create_database, drop_database

    url = await create_database()
    out = tmp_path / "bench.json"  # type: ignore[operator]
    args = ["--seconds", "0.3", "--rounds", "1", "--no-redis", "--scenario", "chat, 1 client"]
    try:
        code = await asyncio.to_thread(suite.main, [*args, "--keys", url, "--json", str(out)])
    finally:
        await drop_database(url)
    assert code == 0
    assert "virtual key" in capsys.readouterr().out
    (result,) = json.loads(out.read_text())["results"]
    keyed = result["others"]["virtual key"]["modelrouter"]
    assert keyed["requests"] > 0
    assert keyed["errors"] == {}
