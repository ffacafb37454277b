"""Drive `wrk` (a C load generator) when it is installed, so the client is not the bottleneck."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile

from modelrouter.bench.loadgen import Measurement

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_PERCENTILE = re.compile(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)


def available() -> bool:
    return shutil.which("wrk") is not None


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def run_wrk(
    url: str,
    body: bytes,
    *,
    concurrency: int,
    duration: float,
    headers: dict[str, str] | None = None,
) -> Measurement:
    """POST `body` to `url` (with `headers`); returns counts and the p50/p90/p99 wrk reports."""
    script = f"wrk.method = 'POST'\nwrk.body = {_quoted(body.decode())}\n"
    for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
        script += f"wrk.headers[{_quoted(name)}] = {_quoted(value)}\n"
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script)
        lua.flush()
        threads = min(2, concurrency)
        output = subprocess.run(  # noqa: S603 - fixed arguments, wrk found on PATH
            [
                shutil.which("wrk") or "wrk",
                f"-t{threads}",
                f"-c{concurrency}",
                f"-d{max(1, round(duration))}s",  # wrk takes whole seconds
                "--latency",
                "-s",
                lua.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=duration + 30,
        ).stdout
    return parse(output)


def parse(output: str) -> Measurement:
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    errors: dict[str, int] = {}
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors["http_error"] = int(match.group(1))
    if match := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    ):
        socket_errors = sum(int(n) for n in match.groups())
        if socket_errors:
            errors["socket"] = socket_errors
    seconds = float(re.search(r"requests in ([\d.]+)s", output).group(1))  # type: ignore[union-attr]
    marks = {p: float(v) * _UNITS[u] * 1000 for p, v, u in _PERCENTILE.findall(output)}
    ok = total - sum(errors.values())
    return Measurement(
        total,
        ok / seconds,
        marks.get("50", 0.0),
        marks.get("90", 0.0),
        marks.get("99", 0.0),
        errors,
    )
