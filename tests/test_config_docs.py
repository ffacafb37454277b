"""The documentation of the configuration follows the code: every variable the code reads is in
README's table (with the default the code uses) and in .env.example, and nothing else is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from modelrouter.config import KNOWN_PROVIDERS, variables

ROOT = Path(__file__).resolve().parent.parent
TICKED = re.compile(r"`([^`]*)`")
NAME = re.compile(r"(?:<PROVIDER>_)?[A-Z][A-Z0-9_]+")


def _expand(name: str) -> list[str]:
    if name.startswith("<PROVIDER>_"):
        return [f"{p.upper()}_{name.removeprefix('<PROVIDER>_')}" for p in KNOWN_PROVIDERS]
    return [name]


def readme_rows() -> list[tuple[list[str], str]]:
    """(variable names, default cell) of each row of README's configuration table."""
    text = (ROOT / "README.md").read_text()
    table = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = [n for n in TICKED.findall(cells[0]) if NAME.fullmatch(n)]
        rows.append((names, cells[-1]))
    return rows


def _same(documented: str, default: object, known: dict[str, object]) -> bool:
    if documented in known:  # "defaults to another variable"
        return known[documented] == default
    if isinstance(default, bool):
        return documented.lower() == str(default).lower()
    if isinstance(default, int | float):
        try:
            return float(documented) == float(default)
        except ValueError:
            return False
    return documented == default


def test_every_variable_the_code_reads_is_in_the_readme_table() -> None:
    documented = {v for names, _ in readme_rows() for n in names for v in _expand(n)}
    missing = sorted(set(variables()) - documented)
    assert not missing, f"README's configuration table lacks {missing}"


def test_every_variable_in_the_readme_table_is_read_by_the_code() -> None:
    known = variables()
    unknown = [n for names, _ in readme_rows() for n in names for v in _expand(n) if v not in known]
    assert not unknown, f"README documents variables the code does not read: {unknown}"


def test_readme_defaults_are_the_code_defaults() -> None:
    known = variables()
    checked = 0
    for names, cell in readme_rows():
        values = TICKED.findall(cell)
        pairs = re.findall(r"`?([A-Z]+)`?:\s*`([^`]*)`", cell)  # "GROQ: `url`, ..." per provider
        if pairs:
            for provider, value in pairs:
                for name in names:
                    variable = f"{provider}_{name.removeprefix('<PROVIDER>_')}"
                    assert _same(value, known[variable], known), (variable, value)
                    checked += 1
        elif len(values) == 1 and all(n.startswith("<PROVIDER>_") for n in names):
            for variable in (v for n in names for v in _expand(n)):
                assert _same(values[0], known[variable], known), (variable, values[0])
                checked += 1
        elif len(values) == len(names):
            for name, value in zip(names, values, strict=True):
                for variable in _expand(name):
                    assert _same(value, known[variable], known), (variable, value)
                    checked += 1
        elif len(values) == 1:
            for variable in (v for n in names for v in _expand(n)):
                assert _same(values[0], known[variable], known), (variable, values[0])
                checked += 1
    assert checked >= 30  # the table's shape changed: make this test read it again


@pytest.mark.parametrize("name", sorted(variables()))
def test_env_example_shows_each_variable(name: str) -> None:
    text = (ROOT / ".env.example").read_text()
    assert re.search(rf"^(?:# )?{name}=", text, re.MULTILINE), f".env.example lacks {name}"
