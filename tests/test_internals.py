"""The dependencies' private internals that modelrouter relies on (modelrouter/internals.py):
bounded in pyproject.toml to the minor releases tested, and checked when `serve` starts, so that
another release stops it with one line instead of failing requests (or, for redis-py, sending
the limits to local state for good)."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from modelrouter.cli import main
from modelrouter.state import wire
from modelrouter.web import connections
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
BOUNDED = ("aiohttp", "redis")


def test_the_installed_releases_have_every_internal_relied_on() -> None:
    connections.check_internals()
    wire.check_internals()


@pytest.mark.parametrize("package", BOUNDED)
def test_pyproject_allows_the_installed_minor_release_and_none_after_it(package: str) -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (requirement,) = [Requirement(d) for d in declared if Requirement(d).name == package]
    installed = Version(metadata.version(package))
    assert installed in requirement.specifier
    next_minor = Version(f"{installed.major}.{installed.minor + 1}")
    assert next_minor not in requirement.specifier, f"{package}: no upper bound below {next_minor}"


def said(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """What `modelrouter` itself wrote on stderr (not a log line)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("modelrouter:")]


class _NoWriter:
    """A redis-py connection from a release that keeps its StreamWriter elsewhere."""


@pytest.fixture
def serve_stops_before_running(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("API_KEY", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("PORT", str(free_port()))
    # serve configures logging with cached loggers, which would outlive this test.
    monkeypatch.setattr("modelrouter.cli.configure_logging", lambda **_: None)

    def run(*_: object, **__: object) -> None:
        raise AssertionError("serve went on to listen")

    monkeypatch.setattr("modelrouter.web.server.run", run)


@pytest.mark.usefixtures("serve_stops_before_running")
def test_an_aiohttp_without_an_internal_relied_on_stops_serve_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = (*connections.HANDLER_INTERNALS, "_gone_in_this_release")
    monkeypatch.setattr(connections, "HANDLER_INTERNALS", gone)
    assert main(["serve"]) == 1
    (line,) = said(capsys)
    assert line.startswith(f"modelrouter: aiohttp {metadata.version('aiohttp')} is not supported")
    assert "RequestHandler._gone_in_this_release" in line
    assert "aiohttp<" in line, "it says which releases are"


@pytest.mark.usefixtures("serve_stops_before_running")
def test_a_redis_py_without_the_connections_writer_stops_serve_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(wire, "Connection", _NoWriter)
    assert main(["serve", "--workers", "1"]) == 1
    (line,) = said(capsys)
    assert line.startswith(f"modelrouter: redis {metadata.version('redis')} is not supported")
    assert "_NoWriter._writer" in line
