"""`modelrouter keys ...`: the same store and rules as the admin API, from the command line."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelrouter.cli import main
from modelrouter.tenants import hash_secret, well_formed


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("API_KEY", "ADMIN_API_KEY", "PRICES_FILE", "HOST", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def keys_env(database: str, clean_env: pytest.MonkeyPatch) -> str:
    clean_env.setenv("DATABASE_URL", database)
    return database


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(["keys", *argv])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def test_keys_are_created_listed_shown_rotated_and_revoked(
    keys_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, created, _ = run(
        capsys,
        "create",
        "--name",
        "batch-jobs",
        "--team",
        "data",
        "--rpm",
        "20",
        "--budget-usd",
        "12.5",
        "--budget-period",
        "month",
        "--model",
        "groq/*",
        "--model",
        "fast",
        "--metadata",
        '{"ticket": "OPS-1"}',
    )
    assert code == 0
    assert well_formed(created["key"])
    assert (created["rpm"], created["budget_usd"], created["models"]) == (
        20,
        12.5,
        ["groq/*", "fast"],
    )
    assert created["metadata"] == {"ticket": "OPS-1"}

    code, page, _ = run(capsys, "list")
    assert code == 0
    assert [k["name"] for k in page["data"]] == ["batch-jobs"]
    assert created["key"] not in json.dumps(page)

    code, shown, _ = run(capsys, "show", "batch-jobs")  # by name
    assert (code, shown["id"]) == (0, created["id"])

    code, rotated, _ = run(capsys, "rotate", created["id"], "--grace-seconds", "30")
    assert code == 0
    assert well_formed(rotated["key"])
    assert rotated["key"] != created["key"]
    assert rotated["previous_key_expires_at"] is not None

    code, revoked, _ = run(capsys, "revoke", created["id"])
    assert (code, revoked["status"]) == (0, "revoked")
    assert hash_secret(created["key"]) not in json.dumps(revoked)


def test_bad_settings_exit_2_and_write_nothing(
    keys_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (
        ["create", "--name", "x", "--rpm", "-5"],
        ["create", "--name", "x", "--budget-period", "year"],
        ["create", "--name", "x", "--metadata", "{oops"],
        ["create", "--name", "x", "--expires-at", "2020-01-01T00:00:00Z"],
    ):
        code, out, err = run(capsys, *argv)
        assert (code, out) == (2, None), argv
        assert "invalid key settings" in err
    assert run(capsys, "list")[1]["data"] == []


def test_refusals_exit_1_saying_why(keys_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "create", "--name", "dup")[0] == 0
    code, _, err = run(capsys, "create", "--name", "dup")
    assert code == 1
    assert "exists already" in err
    code, _, err = run(capsys, "show", "nobody")
    assert (code, "no key 'nobody'" in err) == (1, True)
    run(capsys, "revoke", "dup")
    code, _, err = run(capsys, "rotate", "dup")
    assert (code, "revoked" in err) == (1, True)


def test_without_database_url_keys_exit_2(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "list")
    assert code == 2
    assert "DATABASE_URL" in err


def test_an_unreachable_database_exits_1(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/none")
    code, _, err = run(capsys, "list")
    assert code == 1
    assert "not answering" in err
