"""What `make bench` prints: the comparison table, the round-by-round ratios, the ceiling."""

from __future__ import annotations

from typing import Any

from modelrouter.bench.loadgen import Measurement


def paired(this: list[Measurement], other: list[Measurement]) -> dict[str, Any]:
    """Round by round (the runs of one round are back to back): the ratio of each round, and
    the median of the throughput ratios and of the p50 differences, which drift between
    rounds does not bias."""
    pairs = list(zip(this, other, strict=True))
    in_order = [o.rate / (m.rate or 1) for m, o in pairs]
    ratios = sorted(in_order)
    added = sorted(o.p50 - m.p50 for m, o in pairs)
    return {
        "per_round": {
            "rounds": len(pairs),
            "rate_ratios": [round(r, 4) for r in in_order],
            "rate_ratio_median": round(ratios[len(ratios) // 2], 4),
            "rate_ratio_range": [round(ratios[0], 4), round(ratios[-1], 4)],
            "p50_added_ms_median": round(added[len(added) // 2], 4),
            "p50_added_ms_range": [round(added[0], 4), round(added[-1], 4)],
        }
    }


def capacity(results: list[dict[str, Any]], cores: int) -> str:
    """What the whole machine can carry through the gateway, from the CPU each part used per
    request under load: the ceiling that more workers cannot pass on this machine."""
    lines = []
    for r in results:
        client = r.get("client_cpu_ms_per_request")
        if client is None or r["concurrency"] < 16:
            continue
        gateway, mock = r["gateway_cpu_ms_per_request"], r["mock_cpu_ms_per_request"]
        total = gateway + mock + client
        lines.append(
            f"{r['scenario']}: CPU per request: gateway {gateway:.3f} + mock {mock:.3f} + wrk "
            f"{client:.3f} ms; {cores} cores carry at most {cores / total * 1000:.0f}/s through "
            "the gateway, however many workers"
        )
    return "".join(line + "\n" for line in lines)


def table(results: list[dict[str, Any]], idle_rss: float) -> str:
    head = (
        f"{'scenario':<34}{'direct req/s':>13}{'router req/s':>13}{'ratio':>7}"
        f"{'direct p50':>11}{'router p50':>11}{'added p50':>10}{'router p99':>11}"
        f"{'CPU ms/req':>11}{'RSS MB':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        d = r["direct"]
        lines.append(_row(r["scenario"], d, r))
        for label, other in r.get("others", {}).items():
            lines.append(_row(f"  {label}", d, other))
            lines.extend(_comparisons(label, r, other))
        m = r["modelrouter"]
        if m.get("first_byte_p50") is not None and d.get("first_byte_p50") is not None:
            lines.append(
                f"{'':<4}first byte p50: direct {d['first_byte_p50']:.2f} ms, router "
                f"{m['first_byte_p50']:.2f} ms; mean stream time ratio "
                f"{(m['mean'] or 0) / (d['mean'] or 1):.3f}"
            )
        errors = {k: v for k, v in {**d["errors"], **m["errors"]}.items() if v}
        if errors:
            lines.append(f"{'':<4}errors: direct {d['errors']}, router {m['errors']}")
    lines.append(f"gateway RSS idle: {idle_rss:.1f} MB; latencies in ms; ratio = router/direct")
    return "\n".join(lines) + "\n"


def _comparisons(label: str, base: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """The lines under another gateway's row: against this tree's gateway (the first), against
    the gateway it is meant to be read with (`versus`), its delay proxy's CPU, its errors."""
    m, o = base["modelrouter"], other["modelrouter"]
    cpu = other["gateway_cpu_ms_per_request"] / (base["gateway_cpu_ms_per_request"] or 1)
    line = (
        f"{'':<4}{label} against this tree: req/s x{o['rate'] / (m['rate'] or 1):.3f}, "
        f"p50 {o['p50'] - m['p50']:+.3f} ms, CPU/req x{cpu:.3f}"
    )
    if other.get("per_round"):
        line += _rounds(other["per_round"])
    lines = [line]
    versus = other.get("versus")
    if versus:
        lines.append(f"{'':<4}{label} against {versus['label']}:{_rounds(versus)[1:]}")
    proxy = other.get("proxy_cpu_ms_per_request")
    if proxy is not None:
        lines.append(
            f"{'':<4}{label}: delay proxy CPU {proxy:.3f} ms/req, beside the gateway's "
            f"{other['gateway_cpu_ms_per_request']:.3f}"
        )
    errors = {k: v for k, v in o["errors"].items() if v}
    if errors:
        lines.append(f"{'':<4}{label} errors: {errors}")
    return lines


def _rounds(per_round: dict[str, Any]) -> str:
    text = (
        f"; per round (median of {per_round['rounds']}): "
        f"req/s x{per_round['rate_ratio_median']:.3f}, "
        f"p50 {per_round['p50_added_ms_median']:+.3f} ms"
    )
    ratios = per_round.get("rate_ratios")
    if ratios:
        text += "; rounds " + " ".join(f"x{r:.3f}" for r in ratios)
    return text


def _row(name: str, d: dict[str, Any], figures: dict[str, Any]) -> str:
    m = figures["modelrouter"]
    ratio = m["rate"] / d["rate"] if d["rate"] else 0.0
    return (
        f"{name:<34}{d['rate']:>13.0f}{m['rate']:>13.0f}{ratio:>7.2f}"
        f"{d['p50']:>11.3f}{m['p50']:>11.3f}{m['p50'] - d['p50']:>+10.3f}{m['p99']:>11.3f}"
        f"{figures['gateway_cpu_ms_per_request']:>11.3f}{figures['gateway_peak_rss_mb']:>8.1f}"
    )


def settings_lines(settings: dict[str, Any]) -> str:
    """What the run paid for, above the table: the limits, and the Redis round trips."""
    rate = settings["rate_limit"]
    lines = [
        (
            f"providers' rate limit {rate}/min (every request pays the rate script, none refused)"
            if rate
            else "providers unlimited (--rate-limit 0: no rate script)"
        )
        + f"; MAX_CONCURRENT_STREAMS {settings['stream_cap']} (every stream pays a lease)"
    ]
    trips = settings.get("redis_round_trip_ms")
    if trips:
        cells = ", ".join(f"{label} {ms:.3f} ms" for label, ms in trips.items())
        lines.append(f"Redis round trip (PING, median of one at a time, from the bench): {cells}")
    delay = settings.get("redis_delay_ms")
    if delay:
        lines.append(
            f"delay proxy: +{delay:g} ms on the way to Redis (replies at once), so +{delay:g} ms "
            "per round trip"
        )
    return "".join(line + "\n" for line in lines)
