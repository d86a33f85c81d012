"""The five monthly snapshot tables: month M's values of a table, one row per (user_id, as_of).

A snapshot month is rebuilt from the month's validated drop (`drops.<table>_<YYYY_MM>`), never from
the live table, so snapshot M holds exactly month M's values whatever has been ingested since.
Snapshot tables are partitioned by as_of, one partition per month (schema `snapshot_months`):
a month is built as a new table, indexed once, and swapped in for the old partition, instead of
deleting and re-inserting a million indexed rows.
"""

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from streamflow_assets.checks import MATCHES_VALIDATED_DROP
from streamflow_assets.months import as_of, event_timestamp
from streamflow_assets.report import CheckOutcome, MissingInputError
from streamflow_assets.sql import (
    NO_AUTOVACUUM,
    first_rows,
    hash_sum,
    ident,
    literal,
    replace_table,
    table_exists,
)
from streamflow_assets.table_specs import TableSpec
from streamflow_assets.warehouse import (
    DROPS_SCHEMA,
    SNAPSHOT_MONTHS_SCHEMA,
    STAGING_SCHEMA,
    drop_stale_staging,
    ensure_tables,
    month_name,
    month_table,
    snapshot_table_ddl,
    staging_name,
)

BUILD_THREADS = 2


def build_snapshot(engine: Engine, spec: TableSpec, partition: str) -> dict:
    """Replace snapshot month `partition` of one table with that month's validated drop."""
    started = time.perf_counter()
    snapshot = spec.snapshot
    source = month_table(spec, partition)
    part = month_name(snapshot.name, partition)
    staged = staging_name(snapshot.name, partition, "build")
    columns = ", ".join(ident(c.name) for c in spec.snapshot_columns())
    params = {"as_of": as_of(partition), "ts": event_timestamp(partition)}
    with engine.connect() as conn:
        if not table_exists(conn, DROPS_SCHEMA, source):
            raise MissingInputError(
                f"{snapshot.name} {partition} is built from the month's validated "
                f"{spec.file_name}, which is not loaded: materialize {spec.name} for {partition}"
            )
    with engine.begin() as conn:
        target = ident(STAGING_SCHEMA, staged)
        conn.execute(
            sa.text(f"CREATE TABLE {target} (LIKE {ident(snapshot.name)}) {NO_AUTOVACUUM}")
        )
        rows = conn.execute(
            sa.text(
                f"INSERT INTO {target} (user_id, as_of, event_timestamp, {columns}) "
                f"SELECT user_id, :as_of, :ts, {columns} FROM {ident(DROPS_SCHEMA, source)}"
            ),
            params,
        ).rowcount
        conn.execute(sa.text(f"ALTER TABLE {target} ADD PRIMARY KEY (user_id, as_of)"))
        conn.execute(sa.text(f"ANALYZE {target}"))  # autovacuum never will (NO_AUTOVACUUM)
        # Proves the partition bound, so ATTACH needs no scan.
        conn.execute(
            sa.text(f"ALTER TABLE {target} ADD CHECK (as_of = {_date_literal(partition)})")
        )
    with engine.begin() as conn:
        partition_table = ident(SNAPSHOT_MONTHS_SCHEMA, part)
        replace_table(conn, (STAGING_SCHEMA, staged), (SNAPSHOT_MONTHS_SCHEMA, part))
        conn.execute(
            sa.text(
                f"ALTER TABLE {ident(snapshot.name)} ATTACH PARTITION {partition_table} "
                f"FOR VALUES IN ({_date_literal(partition)})"
            )
        )
        # Statistics of the whole table, which autovacuum never gathers for a partitioned one:
        # without them the training query guesses 200 users a view and plans hash joins.
        conn.execute(sa.text(f"ANALYZE {ident(snapshot.name)}"))
        preview = first_rows(conn, partition_table)
    return {
        "as_of": str(as_of(partition)),
        "rows": rows,
        "preview": preview,
        "source": f"{DROPS_SCHEMA}.{source}",
        "partition table": f"{SNAPSHOT_MONTHS_SCHEMA}.{part}",
        "seconds": round(time.perf_counter() - started, 2),
    }


def _date_literal(partition: str) -> str:
    # DDL takes no bind parameters; the date comes from a validated partition key.
    return literal(as_of(partition))


def build_snapshots(
    engine: Engine, specs: Sequence[TableSpec], partition: str
) -> list[tuple[dict, CheckOutcome]]:
    """Rebuild month `partition` of the given snapshot tables and check each against the month's
    validated drop (the caller holds the month's lock)."""
    ensure_tables(engine, *(snapshot_table_ddl(spec) for spec in specs))
    for spec in specs:
        drop_stale_staging(engine, spec.snapshot.name, partition)

    def build(spec: TableSpec) -> tuple[dict, CheckOutcome]:
        return build_snapshot(engine, spec, partition), verify_snapshot(engine, spec, partition)

    with ThreadPoolExecutor(BUILD_THREADS) as pool:
        return list(pool.map(build, specs))


def verify_snapshot(engine: Engine, spec: TableSpec, partition: str) -> CheckOutcome:
    """Compare snapshot month `partition` with the month's validated drop, inside PostgreSQL."""
    snapshot = spec.snapshot
    part = ident(SNAPSHOT_MONTHS_SCHEMA, month_name(snapshot.name, partition))
    drop = ident(DROPS_SCHEMA, month_table(spec, partition))
    row = "ROW(user_id, " + ", ".join(ident(c.name) for c in spec.snapshot_columns()) + ")::text"
    digest = hash_sum(row)
    with engine.connect() as conn:
        found = conn.execute(
            sa.text(
                # One pass over each side. One row per user is the partition's primary key
                # (user_id, as_of) with as_of held to the month: rows with another as_of count.
                f"""SELECT s.n, s.other_dates, s.digest, d.n, d.digest
                    FROM (SELECT count(*) AS n, {digest} AS digest,
                                 count(*) FILTER (WHERE as_of <> :as_of
                                                  OR event_timestamp <> :ts) AS other_dates
                          FROM {part}) s,
                         (SELECT count(*) AS n, {digest} AS digest FROM {drop}) d"""
            ),
            {"as_of": as_of(partition), "ts": event_timestamp(partition)},
        ).one()
    rows, wrong_dates, content, drop_rows, drop_content = found
    problems = []
    if rows != drop_rows:
        problems.append(f"{rows:,} rows, the drop has {drop_rows:,}")
    if wrong_dates:
        problems.append(f"{wrong_dates:,} rows with another as_of or event_timestamp")
    if content != drop_content and rows == drop_rows:
        problems.append("the same number of rows with different values")
    return MATCHES_VALIDATED_DROP.outcome(
        asset=snapshot.name,
        passed=not problems,
        description="; ".join(problems)
        or f"{rows:,} rows, as in {DROPS_SCHEMA}.{month_table(spec, partition)}",
        metadata={
            "snapshot rows": rows,
            "drop rows": drop_rows,
            "rows with another as_of/event_timestamp": wrong_dates,
            "content hash matches": content == drop_content,
        },
    )
