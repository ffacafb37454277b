"""Tenants: virtual keys (their secrets, the store in PostgreSQL), prices and cost.

- `secrets`: `new_secret`, `well_formed` (no I/O), `hash_secret`;
- `keys`: the key's settings as the admin API takes them, and `Key` as the store returns it;
- `store`: `KeyStore`, create/list/get/patch/revoke/rotate and `lookup_by_hash`;
- `lookup`: `KeyResolver`, a secret to its `Identity` on the request path (cached, capped);
- `push`: key changes to every replica through Redis pub/sub;
- `limits`: `KeyLimits`, a key's rpm, tpm and streams on the shared state;
- `budget`: a budget's UTC periods and a request's worst-case cost;
- `gate`: `BudgetGate`, reserve before the call and settle after, on the ledger
  (`state/ledger.py`, `state/ledger_redis.py`);
- `spend`: `SpendLog`, spend rows written to PostgreSQL in batches, and the spend reports;
- `spend_spool`: `SpendSpool`, the rows PostgreSQL could not take, in Redis until it can;
- `prices`: the bundled, dated price table with PRICES_FILE over it, and `cost`;
- `cost`: a request's `Charge` (its usage at its price, `Pricing`), and the estimate of a
  stream's usage when the provider gave none.

`web/admin.py` and `web/spend.py` are its HTTP face; `modelrouter keys ...` its command line.
"""

from modelrouter.tenants.cost import Charge, Pricing
from modelrouter.tenants.keys import CreatedKey, Key, KeyInfo, KeyPage, KeyPatch, NewKey, Rotation
from modelrouter.tenants.prices import PriceTable, TokenUsage, bundled, cost, price_table
from modelrouter.tenants.rows import BadCursor
from modelrouter.tenants.secrets import hash_secret, new_secret, well_formed
from modelrouter.tenants.store import (
    DB_ERRORS,
    BadKey,
    KeyChange,
    KeyRevoked,
    KeyStore,
    NameTaken,
)

__all__ = [
    "DB_ERRORS",
    "BadCursor",
    "BadKey",
    "Charge",
    "CreatedKey",
    "Key",
    "KeyChange",
    "KeyInfo",
    "KeyPage",
    "KeyPatch",
    "KeyRevoked",
    "KeyStore",
    "NameTaken",
    "NewKey",
    "PriceTable",
    "Pricing",
    "Rotation",
    "TokenUsage",
    "bundled",
    "cost",
    "hash_secret",
    "new_secret",
    "price_table",
    "well_formed",
]
