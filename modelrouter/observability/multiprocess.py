"""Metrics across the workers of `serve --workers N` (prometheus-client multiprocess mode).

The parent process points PROMETHEUS_MULTIPROC_DIR at a fresh temporary directory before it
starts the workers; each worker then writes its values to files there, and whichever worker
answers a scrape reads them all: counters and histograms are summed, gauges follow their
`multiprocess_mode`. The files of a dead worker keep counting (no drop in a counter when a
worker is replaced); its live gauges are dropped by `mark_dead`.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, generate_latest, multiprocess

ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    return os.environ.get(ENV) or None


def multiprocess_exposition() -> bytes:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def mark_dead(pid: int, path: str) -> None:
    """A worker exited: drop its `live*` gauges."""
    multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
