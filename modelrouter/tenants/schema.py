"""The keys' schema in PostgreSQL (DATABASE_URL, beside the history), as numbered migrations
applied once each, in order.

As for the history: each run takes a transaction-scoped advisory lock of its own first, so
replicas starting at once apply what is missing one at a time. Versions are kept in a table
of their own, so the history's and these never collide. A released migration is never
edited; a change is a new one at the end of the list.
"""

from __future__ import annotations

from typing import Any, Final

LOCK_ID: Final = 0x6D72_6B79  # "mrky": this schema's advisory lock
VERSIONS: Final = "modelrouter_tenants_schema"
KEYS: Final = "modelrouter_keys"
SPEND: Final = "modelrouter_spend"
SPEND_DAILY: Final = "modelrouter_spend_daily"
MIGRATIONS: Final[tuple[tuple[int, str], ...]] = (
    (
        1,
        f"""
        CREATE TABLE IF NOT EXISTS {KEYS} (
            id text PRIMARY KEY,
            name text NOT NULL,
            team text,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz,
            models text[] NOT NULL DEFAULT '{{}}',
            rpm integer CHECK (rpm >= 1),
            tpm bigint CHECK (tpm >= 1),
            max_parallel_streams integer CHECK (max_parallel_streams >= 1),
            budget_usd numeric(21, 9) CHECK (budget_usd >= 0),
            budget_period text NOT NULL DEFAULT 'total'
                CHECK (budget_period IN ('day', 'week', 'month', 'total')),
            metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb,
            disabled boolean NOT NULL DEFAULT false,
            revoked_at timestamptz,
            secret_hash text NOT NULL,
            previous_hash text,
            previous_expires_at timestamptz,
            CONSTRAINT {KEYS}_name_unique UNIQUE (name),
            CONSTRAINT {KEYS}_secret_unique UNIQUE (secret_hash)
        );
        CREATE INDEX IF NOT EXISTS {KEYS}_previous ON {KEYS} (previous_hash)
            WHERE previous_hash IS NOT NULL;
        CREATE INDEX IF NOT EXISTS {KEYS}_listing ON {KEYS} (created_at DESC, id DESC);
        """,
    ),
    (
        2,
        # One row per answered request that had a cost (0 included): its id is made by the
        # writer, so a batch written twice (a reply lost after a commit) is counted once.
        # `key_id` is the request's client id (a virtual key's id, or a static key's hash).
        f"""
        CREATE TABLE IF NOT EXISTS {SPEND} (
            id uuid PRIMARY KEY,
            created_at timestamptz NOT NULL,
            key_id text NOT NULL,
            team text,
            provider text NOT NULL,
            model text NOT NULL,
            cost_nanos bigint NOT NULL CHECK (cost_nanos >= 0),
            request_id text NOT NULL
        );
        CREATE INDEX IF NOT EXISTS {SPEND}_key_time ON {SPEND} (key_id, created_at);
        CREATE INDEX IF NOT EXISTS {SPEND}_time ON {SPEND} (created_at);
        """,
    ),
    (
        3,
        # Spend rows past SPEND_RETENTION_DAYS, summed per UTC day, key, team, provider and
        # model (tenants/spend_rollup.py): a day is counted once, in rows or here. `team` is ''
        # for none, as a primary key's columns cannot be null.
        f"""
        CREATE TABLE IF NOT EXISTS {SPEND_DAILY} (
            day date NOT NULL,
            key_id text NOT NULL,
            team text NOT NULL DEFAULT '',
            provider text NOT NULL,
            model text NOT NULL,
            cost_nanos bigint NOT NULL CHECK (cost_nanos >= 0),
            requests bigint NOT NULL CHECK (requests >= 0),
            PRIMARY KEY (day, key_id, team, provider, model)
        );
        CREATE INDEX IF NOT EXISTS {SPEND_DAILY}_key_day ON {SPEND_DAILY} (key_id, day);
        """,
    ),
)
LATEST: Final = MIGRATIONS[-1][0]
NAME_CONSTRAINT: Final = f"{KEYS}_name_unique"


async def migrate(conn: Any) -> list[int]:
    """Apply the migrations this database lacks; returns the versions applied now."""
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_ID)
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {VERSIONS} ("
            " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in await conn.fetch(f"SELECT version FROM {VERSIONS}")}  # noqa: S608 - a constant
        for version, sql in MIGRATIONS:
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute(f"INSERT INTO {VERSIONS} (version) VALUES ($1)", version)  # noqa: S608
            applied.append(version)
    return applied
