"""The PostgreSQL side of the table specs: names, DDL, and the per-partition writer lock.

Three kinds of tables, all derived from `table_specs`:
- live tables (`public.<table>`): per user, the values of the newest month that held the user,
  with that month's `as_of`;
- month tables (`drops.<table>_<YYYY_MM>`): a month's validated drop, kept so that the month's
  snapshot can be rebuilt whatever has been ingested since;
- snapshot tables (`public.<snapshot>`): (user_id, as_of) plus the snapshot columns, one month per
  as_of, with a timestamptz `event_timestamp` for Feast.
Identifiers only ever come from the table specs and from partition keys Dagster has validated.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from streamflow_assets.sql import advisory_lock, ident
from streamflow_assets.table_specs import Column, SqlType, TableSpec

DROPS_SCHEMA = "drops"
STAGING_SCHEMA = "streamflow_staging"
SNAPSHOT_MONTHS_SCHEMA = "snapshot_months"
"""The monthly partitions of the snapshot tables."""
SCORE_MONTHS_SCHEMA = "score_months"
"""The monthly partitions of the churn model's scores (`churn_scores`)."""

PG_TYPES: dict[SqlType, str] = {
    "TEXT": "text",
    "DATE": "date",
    "BOOLEAN": "boolean",
    "INTEGER": "integer",
    "NUMERIC": "numeric",
}

_PARTITION_RE = re.compile(r"^\d{4}-\d{2}$")


def month_name(base: str, partition: str) -> str:
    """`<base>_<YYYY_MM>`: the name of a table's month."""
    if not _PARTITION_RE.match(partition):
        raise ValueError(f"not a monthly partition key: {partition!r}")
    return f"{base}_{partition.replace('-', '_')}"


def month_table(spec: TableSpec, partition: str) -> str:
    """The name (in DROPS_SCHEMA) of a month's validated drop of a table."""
    return month_name(spec.name, partition)


def staging_name(base: str, partition: str, kind: str) -> str:
    """A run's own staging table: concurrent or killed runs never share one."""
    return f"{month_name(base, partition)}_{kind}_{uuid.uuid4().hex[:8]}"


def column_ddl(column: Column, *, enforce_not_null: bool = True) -> str:
    not_null = " NOT NULL" if enforce_not_null and not column.nullable else ""
    return f"{ident(column.name)} {PG_TYPES[column.sql_type]}{not_null}"


def live_table_ddl(spec: TableSpec) -> str:
    columns = ",\n    ".join(column_ddl(c) for c in spec.columns)
    return f"""CREATE TABLE IF NOT EXISTS {ident(spec.name)} (
    {columns},
    as_of date NOT NULL,
    PRIMARY KEY ({", ".join(ident(k) for k in spec.primary_key)})
)"""


def snapshot_table_ddl(spec: TableSpec) -> str:
    assert spec.snapshot is not None
    columns = ",\n    ".join(column_ddl(c) for c in spec.snapshot_columns())
    return f"""CREATE TABLE IF NOT EXISTS {ident(spec.snapshot.name)} (
    user_id text NOT NULL,
    as_of date NOT NULL,
    event_timestamp timestamptz NOT NULL,
    {columns},
    PRIMARY KEY (user_id, as_of)
) PARTITION BY LIST (as_of)"""


@contextlib.contextmanager
def ddl_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that creates or changes tables, the project's schemas in place, one such
    transaction at a time: runs of different partitions may create the same tables at once."""
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('streamflow:ddl'))"))
        for schema in (DROPS_SCHEMA, STAGING_SCHEMA, SNAPSHOT_MONTHS_SCHEMA, SCORE_MONTHS_SCHEMA):
            conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}"))
        yield conn


def ensure_tables(engine: Engine, *ddl: str) -> None:
    """Create the schemas and the given tables if missing."""
    with ddl_transaction(engine) as conn:
        for statement in ddl:
            conn.execute(sa.text(statement))


def drop_stale_staging(engine: Engine, base: str, partition: str) -> int:
    """Drop staging tables left by killed runs of a partition (the caller holds its lock)."""
    prefix = month_name(base, partition) + "_"
    with engine.begin() as conn:
        stale = (
            conn.execute(
                sa.text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = :schema "
                    "AND starts_with(tablename, :prefix)"
                ),
                {"schema": STAGING_SCHEMA, "prefix": prefix},
            )
            .scalars()
            .all()
        )
        for name in stale:
            conn.execute(sa.text(f"DROP TABLE {ident(STAGING_SCHEMA, name)}"))
    return len(stale)


_STAGED_MONTH = re.compile(r"_(\d{4})_(\d{2})_[a-z]+_[0-9a-f]{8}(_next)?$")
STAGING_OWNERS = ("ingestion", "snapshots")
"""The steps that stage tables of a month, each under its `partition_lock`."""


def staging_leftovers(engine: Engine) -> list[tuple[str, str | None, int]]:
    """(table, month or None, bytes) of every table in the staging schema."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :schema AND c.relkind IN ('r', 'p') ORDER BY 1"
            ),
            {"schema": STAGING_SCHEMA},
        ).all()
    out = []
    for name, size in rows:
        match = _STAGED_MONTH.search(name)
        out.append((name, f"{match[1]}-{match[2]}" if match else None, int(size)))
    return out


def drop_abandoned_staging(engine: Engine) -> list[str]:
    """Drop the staging tables of any month no live run is working on: for each month with
    leftovers, take (without waiting) the locks of every step that stages that month's tables;
    holding them, no run of it is alive, so what it staged is a dead run's. The tables dropped.

    Online tables staged by a killed `online_features` are dropped by its next run (under the
    online store's lock); tables that name no month are left alone."""
    months = sorted({month for _, month, _ in staging_leftovers(engine) if month})
    dropped = []
    for month in months:
        keys = [f"streamflow:{owner}:{month}" for owner in STAGING_OWNERS]
        with engine.connect() as conn:
            held = [
                key
                for key in keys
                if conn.execute(
                    sa.text("SELECT pg_try_advisory_lock(hashtextextended(:k, 0))"), {"k": key}
                ).scalar_one()
            ]
            try:
                if len(held) == len(keys):
                    for name, leftover_month, _ in staging_leftovers(engine):
                        if leftover_month == month:
                            conn.execute(
                                sa.text(f"DROP TABLE IF EXISTS {ident(STAGING_SCHEMA, name)}")
                            )
                            dropped.append(name)
                    conn.commit()
            finally:
                for key in held:
                    conn.execute(
                        sa.text("SELECT pg_advisory_unlock(hashtextextended(:k, 0))"), {"k": key}
                    )
                conn.commit()
    return dropped


def partition_lock(engine: Engine, asset: str, partition: str):
    """The writer lock of one asset partition: two runs of it never interleave their writes."""
    return advisory_lock(engine, f"{asset}:{partition}")
