"""What the admin API shows of a key beyond its settings: when its budget's period resets."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.tenants.test_budget_units import key

NOW = datetime(2026, 12, 9, 15, 30, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize(
    ("period", "resets"),
    [
        ("day", datetime(2026, 12, 10, tzinfo=UTC)),
        ("week", datetime(2026, 12, 14, tzinfo=UTC)),  # the next Monday
        ("month", datetime(2027, 1, 1, tzinfo=UTC)),
        ("total", None),
    ],
)
def test_a_budgeted_key_says_when_its_period_resets(period: str, resets: datetime | None) -> None:
    assert key(budget_period=period).info(NOW).budget_resets_at == resets


def test_a_key_without_a_budget_has_no_reset() -> None:
    assert key(budget_nanos=None, budget_period="day").info(NOW).budget_resets_at is None
