"""The history schema, as numbered migrations applied once each, in order, at start-up.

Safe when replicas start at once: each run takes a transaction-scoped advisory lock first, so
one replica applies what is missing while the others wait, then find nothing left to do.
A migration is never edited once released; a change is a new one at the end of the list.
"""

from __future__ import annotations

from typing import Any, Final

LOCK_ID: Final = 0x6D72_6869  # "mrhi": this schema's advisory lock
TABLE: Final = "modelrouter_requests"
MIGRATIONS: Final[tuple[tuple[int, str], ...]] = (
    (
        1,
        f"""
        CREATE TABLE IF NOT EXISTS {TABLE} (
            id bigserial PRIMARY KEY,
            request_id text NOT NULL,
            created_at timestamptz NOT NULL,
            client_id text NOT NULL,
            route text NOT NULL,
            provider text,
            model text,
            attempts integer NOT NULL DEFAULT 0,
            status integer NOT NULL,
            error_type text,
            prompt_tokens integer,
            completion_tokens integer,
            latency_ms double precision NOT NULL,
            ttfb_ms double precision,
            cache text,
            messages jsonb,
            answer text
        );
        CREATE INDEX IF NOT EXISTS {TABLE}_client_time
            ON {TABLE} (client_id, created_at DESC, id DESC);
        CREATE INDEX IF NOT EXISTS {TABLE}_client_request ON {TABLE} (client_id, request_id);
        CREATE INDEX IF NOT EXISTS {TABLE}_time ON {TABLE} (created_at);
        """,
    ),
    # Token counts past 2^31 (an upstream's usage) failed the whole batch they were in. This
    # rewrites the table under an exclusive lock: on a large history it takes a while (the
    # writer gives migrations their own, longer timeout), and reads wait meanwhile.
    (
        2,
        f"""
        ALTER TABLE {TABLE}
            ALTER COLUMN prompt_tokens TYPE bigint,
            ALTER COLUMN completion_tokens TYPE bigint;
        """,
    ),
    # Each request's cost (integer nano-dollars, the spend counters' figure) and whether its
    # usage was estimated. Nullable columns without a default: no rewrite of the table.
    (
        3,
        f"""
        ALTER TABLE {TABLE}
            ADD COLUMN IF NOT EXISTS cost_nanos bigint,
            ADD COLUMN IF NOT EXISTS usage_estimated boolean;
        """,
    ),
    # A hedged stream's outcome (won, lost, skipped_cap; null: no hedge was due) and, for a
    # stream continued after a cut, the deployment whose answer was cut. Nullable, no default.
    (
        4,
        f"""
        ALTER TABLE {TABLE}
            ADD COLUMN IF NOT EXISTS hedge text,
            ADD COLUMN IF NOT EXISTS continued_from text;
        """,
    ),
)
LATEST: Final = MIGRATIONS[-1][0]


async def migrate(conn: Any, *, timeout: float = 600.0) -> list[int]:
    """Apply the migrations this database lacks; returns the versions applied now.

    `timeout` bounds each statement, in place of the pool's (meant for reads): waiting for
    another replica's migration, or rewriting a large table, takes longer than a query."""
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_ID, timeout=timeout)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS modelrouter_schema ("
            " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
            timeout=timeout,
        )
        done = {row[0] for row in await conn.fetch("SELECT version FROM modelrouter_schema")}
        for version, sql in MIGRATIONS:
            if version in done:
                continue
            await conn.execute(sql, timeout=timeout)
            await conn.execute("INSERT INTO modelrouter_schema (version) VALUES ($1)", version)
            applied.append(version)
    return applied
