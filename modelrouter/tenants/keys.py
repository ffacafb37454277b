"""A virtual key's settings as the admin API takes them, and the key as the store returns it.

Input is validated here, whole, before anything is written: unknown fields, negative or
non-finite numbers, a bad period, a name or pattern out of shape, metadata over 4 KB are all
a `msgspec.ValidationError` naming the field.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Final, Literal

import msgspec

from modelrouter.tenants.secrets import same_hash

MAX_METADATA_BYTES: Final = 4096
MAX_MODELS: Final = 256
MAX_GRACE_SECONDS: Final = 30 * 24 * 3600
NANOS_PER_USD: Final = 1_000_000_000

Period = Literal["day", "week", "month", "total"]
Status = Literal["active", "disabled", "expired", "revoked"]
Refusal = Literal["disabled", "expired", "revoked", "rotated"]
# Names and teams go into URLs, logs and metric labels: a conservative alphabet.
Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")]
# A model name, `provider/model`, an alias, or an fnmatch pattern with `*` and `?`
# (no `[...]` sets, no spaces or control characters).
ModelPattern = Annotated[str, msgspec.Meta(pattern=r"^[^\s\x00-\x1f\x7f\[\]]{1,256}$")]
Models = Annotated[list[ModelPattern], msgspec.Meta(max_length=MAX_MODELS)]
Rpm = Annotated[int, msgspec.Meta(ge=1, le=10_000_000)]
Tpm = Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000_000)]
Streams = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
BudgetUsd = Annotated[float, msgspec.Meta(ge=0.0, le=1_000_000_000.0)]  # inf/NaN fail here
Expiry = Annotated[datetime, msgspec.Meta(tz=True)]
Grace = Annotated[int, msgspec.Meta(ge=0, le=MAX_GRACE_SECONDS)]
UNSET: Final = msgspec.UNSET
Unset = msgspec.UnsetType


def _check_metadata(metadata: Any) -> None:
    if isinstance(metadata, dict) and len(msgspec.json.encode(metadata)) > MAX_METADATA_BYTES:
        raise ValueError(f"`metadata` is larger than {MAX_METADATA_BYTES} bytes as JSON")


class NewKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`POST /admin/keys`: a key's settings. Unset limits mean no limit; empty `models`, all."""

    name: Name
    team: Name | None = None
    expires_at: Expiry | None = None
    models: Models = []
    rpm: Rpm | None = None
    tpm: Tpm | None = None
    max_parallel_streams: Streams | None = None
    budget_usd: BudgetUsd | None = None
    budget_period: Period = "total"
    metadata: dict[str, Any] = {}
    disabled: bool = False

    def __post_init__(self) -> None:
        _check_metadata(self.metadata)


class KeyPatch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`PATCH /admin/keys/{id}`: the fields given change (null clears an optional one)."""

    name: Name | Unset = UNSET
    team: Name | Unset | None = UNSET
    expires_at: Expiry | Unset | None = UNSET
    models: Models | Unset = UNSET
    rpm: Rpm | Unset | None = UNSET
    tpm: Tpm | Unset | None = UNSET
    max_parallel_streams: Streams | Unset | None = UNSET
    budget_usd: BudgetUsd | Unset | None = UNSET
    budget_period: Period | Unset = UNSET
    metadata: dict[str, Any] | Unset = UNSET
    disabled: bool | Unset = UNSET

    def __post_init__(self) -> None:
        _check_metadata(self.metadata)

    def changes(self) -> dict[str, Any]:
        """The fields given, by name."""
        return {
            name: value
            for name in self.__struct_fields__
            if (value := getattr(self, name)) is not UNSET
        }


class Rotation(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`POST /admin/keys/{id}/rotate`: the old secret keeps working `grace_seconds` more."""

    grace_seconds: Grace = 0


class KeyInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A key as the admin API shows it: never its secret nor its hash."""

    id: str
    name: str
    team: str | None
    status: Status
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    models: list[str]
    rpm: int | None
    tpm: int | None
    max_parallel_streams: int | None
    budget_usd: float | None
    budget_period: Period
    metadata: dict[str, Any]
    disabled: bool
    revoked_at: datetime | None
    previous_key_expires_at: datetime | None  # the last rotation's old secret works until then
    budget_resets_at: datetime | None = None  # the current period's end (None: no budget, total)


class CreatedKey(KeyInfo, frozen=True, kw_only=True):
    """`POST /admin/keys` and `.../rotate`: the key and its secret, shown this once."""

    key: str


class KeyPage(msgspec.Struct, frozen=True, kw_only=True):
    data: list[KeyInfo]
    next_cursor: str | None


class Key(msgspec.Struct, frozen=True, kw_only=True):
    """A key as stored (`KeyStore` returns these): what admission needs, hashes included."""

    id: str
    name: str
    team: str | None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    models: tuple[str, ...]
    rpm: int | None
    tpm: int | None
    max_parallel_streams: int | None
    budget_nanos: int | None  # budget_usd in integer nano-dollars, as spend is counted
    budget_period: Period
    metadata: dict[str, Any]
    disabled: bool
    revoked_at: datetime | None
    secret_hash: str
    previous_hash: str | None
    previous_expires_at: datetime | None

    def refusal(self, secret_hash: str, now: datetime) -> Refusal | None:
        """Why a request carrying a secret of this hash must be refused now (None: it may
        pass). The previous secret of a rotation counts only within its grace."""
        if self.revoked_at is not None:
            return "revoked"
        if self.disabled:
            return "disabled"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        if same_hash(secret_hash, self.secret_hash):
            return None
        previous, grace = self.previous_hash, self.previous_expires_at
        in_grace = previous is not None and grace is not None and grace > now
        return None if in_grace and same_hash(secret_hash, previous or "") else "rotated"

    def status(self, now: datetime) -> Status:
        if self.revoked_at is not None:
            return "revoked"
        if self.disabled:
            return "disabled"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def allows(self, names: Iterable[str]) -> bool:
        """Whether any of `names` (a candidate's `provider/model`, the alias asked for, the
        bare model) is in the allow-list; an empty list allows everything."""
        return allowed(self.models, names)

    def info(self, now: datetime) -> KeyInfo:
        from modelrouter.tenants.budget import window  # noqa: PLC0415 - budget imports keys

        budget = self.budget_nanos
        grace = self.previous_expires_at
        return KeyInfo(
            id=self.id,
            name=self.name,
            team=self.team,
            status=self.status(now),
            created_at=self.created_at,
            updated_at=self.updated_at,
            expires_at=self.expires_at,
            models=list(self.models),
            rpm=self.rpm,
            tpm=self.tpm,
            max_parallel_streams=self.max_parallel_streams,
            budget_usd=None if budget is None else budget / NANOS_PER_USD,
            budget_period=self.budget_period,
            metadata=self.metadata,
            disabled=self.disabled,
            revoked_at=self.revoked_at,
            previous_key_expires_at=grace if grace is not None and grace > now else None,
            budget_resets_at=None if budget is None else window(self.budget_period, now).reset_at,
        )

    def created(self, secret: str, now: datetime) -> CreatedKey:
        return CreatedKey(**msgspec.structs.asdict(self.info(now)), key=secret)


def allowed(patterns: Iterable[str], names: Iterable[str]) -> bool:
    patterns = tuple(patterns)
    if not patterns:
        return True
    return any(fnmatch.fnmatchcase(name, p) for name in names for p in patterns)


def usd_to_nanos(usd: float) -> int:
    """Dollars as given (a JSON number) to integer nano-dollars, from its decimal text so that
    0.01 is exactly 10,000,000."""
    return int((Decimal(repr(usd)) * NANOS_PER_USD).to_integral_value(ROUND_HALF_UP))


def nanos_to_decimal(nanos: int) -> Decimal:
    return Decimal(nanos).scaleb(-9)
