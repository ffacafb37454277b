"""What a request holds against its virtual key, and the refusal of its limits."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from modelrouter.state.base import Lease
from modelrouter.state.ledger import Account
from modelrouter.tenants.gate import Admission
from modelrouter.tenants.keys import Key

if TYPE_CHECKING:
    from modelrouter.tenants.meter import Meter


class Limited(Exception):
    """Over one of the key's limits: a 429 with Retry-After."""

    def __init__(self, reason: str, retry_after: float, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # rate_limited, tpm or streams (the rejection metric's label)
        self.retry_after = retry_after
        self.message = message


class Hold(msgspec.Struct, gc=False):
    """Tokens reserved of the key's tpm, a stream lease, and (from a `Meter`) the meter that
    settles them, with the budget's hold: in the meter's `account` (its `token`, and what the
    budget had `left` after it), or the gate's `admission` (a period whose spend was loaded
    first: `waits` until then)."""

    key: Key
    reserved: int
    lease: Lease | None
    meter: Meter | None = None
    admission: Admission | None = None  # the budget's reservation by the gate
    amount: int | None = None  # the budget's worst case (None: the key has no budget here)
    account: Account | None = None  # where the meter holds `amount` (None: it does not)
    token: int = 0  # the hold's in the account
    left: int = 0  # what the budget had left after the hold
    waits: bool = False  # the budget is not held yet: `web.keylimits.admit_rest` holds it
