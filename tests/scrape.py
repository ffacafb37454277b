"""Reading a `/metrics` page in tests: exact sample values, and `promtool check metrics`."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

PROMTOOL = shutil.which("promtool")


class Page:
    """One scrape, parsed: `page.value("modelrouter_fallbacks_total", from_provider="groq")`."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        self.families: dict[str, str] = {}  # family name -> type
        for family in text_string_to_metric_families(text):
            self.families[family.name] = family.type
            for sample in family.samples:
                key = (sample.name, frozenset(sample.labels.items()))
                self.samples[key] = sample.value

    def value(self, name: str, **labels: str) -> float | None:
        """The sample with exactly these labels, or None when the series does not exist."""
        return self.samples.get((name, frozenset(labels.items())))

    def total(self, name: str, **labels: str) -> float:
        """The sum over every series of `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def series(self, name: str) -> list[dict[str, str]]:
        return [dict(ls) for (n, ls) in self.samples if n == name]

    def sample_names(self) -> set[str]:
        return {name for name, _ in self.samples}


async def scrape(client: Any) -> Page:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return Page(await response.text())


def promtool_check_metrics(text: str) -> None:
    """Fail on any problem `promtool check metrics` reports (the caller skips without it)."""
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=text.encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    report = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, report
    assert not report.strip(), report  # lint warnings (naming, units) count as failures too
