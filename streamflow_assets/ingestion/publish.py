"""SQL that turns a validated staging table into the month's record and the live table's rows."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from streamflow_assets.table_specs import TableSpec
from streamflow_assets.warehouse import DROPS_SCHEMA, PG_TYPES, STAGING_SCHEMA, ident


def drop_stale_staging(engine: Engine, spec: TableSpec, partition: str) -> int:
    """Drop staging tables left by killed runs of this partition (the caller holds its lock)."""
    prefix = f"{spec.name}_{partition.replace('-', '_')}_"
    with engine.begin() as conn:
        names = conn.execute(
            sa.text(
                "SELECT tablename FROM pg_tables WHERE schemaname = :schema "
                "AND starts_with(tablename, :prefix)"
            ),
            {"schema": STAGING_SCHEMA, "prefix": prefix},
        ).scalars()
        stale = list(names)
        for name in stale:
            conn.execute(sa.text(f"DROP TABLE {ident(STAGING_SCHEMA, name)}"))
    return len(stale)


def cast_staged(engine: Engine, spec: TableSpec, raw: str, typed: str) -> None:
    """Copy the raw TEXT staging table into a table of the spec's SQL types."""
    casts = ", ".join(
        f"{ident(c.name)}::{PG_TYPES[c.sql_type]} AS {ident(c.name)}" for c in spec.columns
    )
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE {ident(STAGING_SCHEMA, typed)} AS "
                f"SELECT {casts} FROM {ident(STAGING_SCHEMA, raw)}"
            )
        )


def publish(
    conn: Connection, spec: TableSpec, typed: str, month_table: str, as_of: date
) -> dict[str, int]:
    """Make the validated table the month's record and upsert it into the live table.

    Runs inside the caller's transaction. A live row is replaced only by a newer month, or by
    the same month with different values; an older month never overwrites a newer one.
    """
    live = ident(spec.name)
    # Publishes of different months into one live table take turns (no upsert deadlocks).
    conn.execute(sa.text(f"LOCK TABLE {live} IN SHARE ROW EXCLUSIVE MODE"))
    conn.execute(sa.text(f"DROP TABLE IF EXISTS {ident(DROPS_SCHEMA, month_table)}"))
    conn.execute(
        sa.text(f"ALTER TABLE {ident(STAGING_SCHEMA, typed)} RENAME TO {ident(month_table)}")
    )
    conn.execute(
        sa.text(
            f"ALTER TABLE {ident(STAGING_SCHEMA, month_table)} SET SCHEMA {ident(DROPS_SCHEMA)}"
        )
    )
    month = ident(DROPS_SCHEMA, month_table)
    conn.execute(sa.text(f"ALTER TABLE {month} ADD PRIMARY KEY (user_id)"))

    older = conn.execute(
        sa.text(
            f"SELECT count(*) FROM {month} AS m JOIN {live} AS l USING (user_id) "
            "WHERE l.as_of > :as_of"
        ),
        {"as_of": as_of},
    ).scalar_one()

    keys = set(spec.primary_key)
    columns = [ident(c.name) for c in spec.columns]
    values = [ident(c.name) for c in spec.columns if c.name not in keys]
    assignments = ", ".join(f"{v} = EXCLUDED.{v}" for v in values)
    live_values = ", ".join(f"{live}.{v}" for v in values)
    new_values = ", ".join(f"EXCLUDED.{v}" for v in values)
    counts = conn.execute(
        sa.text(
            f"""
            WITH upserted AS (
                INSERT INTO {live} ({", ".join(columns)}, as_of)
                SELECT {", ".join(columns)}, :as_of FROM {month}
                ON CONFLICT ({", ".join(ident(k) for k in spec.primary_key)}) DO UPDATE
                SET {assignments}, as_of = EXCLUDED.as_of
                WHERE {live}.as_of < EXCLUDED.as_of
                   OR ({live}.as_of = EXCLUDED.as_of
                       AND ROW({live_values}) IS DISTINCT FROM ROW({new_values}))
                RETURNING (xmax = 0) AS inserted
            )
            SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted)
            FROM upserted
            """
        ),
        {"as_of": as_of},
    ).one()
    return {"inserted": counts[0], "updated": counts[1], "skipped_as_older": older}
