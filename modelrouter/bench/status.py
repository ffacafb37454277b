"""What a gateway under test says about itself after the rounds, so that its rows can be
trusted: a Redis-mode gateway that fell back to local state, or a provider whose rate limit
refused requests, measured something else than its label says."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def _get(url: str, *, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our loopback URL
        body: bytes = response.read()
    return body


def statuses(gateways: dict[str, str]) -> dict[str, dict[str, Any]]:
    """`gateway_status` of each gateway (label -> URL); one that does not answer says why."""
    found: dict[str, dict[str, Any]] = {}
    for label, url in gateways.items():
        try:
            found[label] = gateway_status(url)
        except (OSError, ValueError) as exc:
            found[label] = {"unavailable": f"{type(exc).__name__}: {exc}"}
    return found


def gateway_status(url: str, *, timeout: float = 5.0) -> dict[str, Any]:
    """The state backend (`/health`), and from `/metrics`: the Redis calls that failed, the
    requests our own limits refused, and the providers that paid a rate decision (their
    budget gauge is set only when a limited provider admits a request)."""
    health = json.loads(_get(f"{url}/health", timeout=timeout))
    metrics = _get(f"{url}/metrics", timeout=timeout).decode()
    redis_errors = rejections = 0.0
    rate_paid: list[str] = []
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "modelrouter_redis_errors_total":
                redis_errors += sample.value
            elif sample.name == "modelrouter_rate_limit_rejections_total":
                rejections += sample.value
            elif sample.name == "modelrouter_rate_budget_remaining":
                rate_paid.append(sample.labels["provider"])
    return {
        "state_backend": health.get("state_backend"),
        "redis_errors": int(redis_errors),
        "limit_rejections": int(rejections),
        "rate_paid_by": sorted(rate_paid),
    }


def warnings(found: dict[str, dict[str, Any]], *, redis_labels: set[str]) -> str:
    """A line for each gateway whose rows measured something else than meant."""
    lines = []
    for label, status in found.items():
        if "unavailable" in status:
            lines.append(f"note: {label}: no status after the rounds ({status['unavailable']})\n")
            continue
        problems = []
        if label in redis_labels and status["state_backend"] != "redis":
            problems.append(f"state backend {status['state_backend']} at the end")
        if status["redis_errors"]:
            problems.append(f"{status['redis_errors']} Redis calls failed (local state meanwhile)")
        if status["limit_rejections"]:
            problems.append(f"{status['limit_rejections']} requests refused by our own limits")
        if problems:
            lines.append(f"note: {label}: {'; '.join(problems)}\n")
    return "".join(lines)
