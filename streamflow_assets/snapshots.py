"""The five monthly snapshot tables: month M's values of a table, one row per (user_id, as_of).

A snapshot month is rebuilt from the month's validated drop (`drops.<table>_<YYYY_MM>`), never from
the live table, so snapshot M holds exactly month M's values whatever has been ingested since.
Snapshot tables are partitioned by as_of, one partition per month (schema `snapshot_months`):
a month is built as a new table, indexed once, and swapped in for the old partition, instead of
deleting and re-inserting a million indexed rows.
"""

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from datetime import time as clock

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from streamflow_assets.partitions import as_of, monthly_partitions
from streamflow_assets.resources import StreamflowDatabase
from streamflow_assets.table_specs import SNAPSHOT_TABLES, TableSpec
from streamflow_assets.warehouse import (
    DROPS_SCHEMA,
    SNAPSHOT_MONTHS_SCHEMA,
    STAGING_SCHEMA,
    column_schema,
    drop_stale_staging,
    ensure_tables,
    ident,
    month_name,
    month_table,
    partition_lock,
    preview,
    snapshot_table_ddl,
    staging_name,
    table_exists,
)

BUILD_THREADS = 2


def event_timestamp(partition: str) -> datetime:
    """The timestamptz Feast sees for a snapshot: as_of at midnight UTC."""
    return datetime.combine(as_of(partition), clock(0), tzinfo=UTC)


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
            raise dg.Failure(
                f"{snapshot.name} {partition} is built from the month's validated "
                f"{spec.file_name}, which is not loaded: materialize {spec.name} for {partition}"
            )
    with engine.begin() as conn:
        target = ident(STAGING_SCHEMA, staged)
        conn.execute(sa.text(f"CREATE TABLE {target} (LIKE {ident(snapshot.name)})"))
        rows = conn.execute(
            sa.text(
                f"INSERT INTO {target} (user_id, as_of, event_timestamp, {columns}) "
                f"SELECT user_id, :as_of, :ts, {columns} FROM {ident(DROPS_SCHEMA, source)}"
            ),
            params,
        ).rowcount
        conn.execute(sa.text(f"ALTER TABLE {target} ADD PRIMARY KEY (user_id, as_of)"))
        # Proves the partition bound, so ATTACH needs no scan.
        conn.execute(
            sa.text(f"ALTER TABLE {target} ADD CHECK (as_of = {_date_literal(partition)})")
        )
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {ident(SNAPSHOT_MONTHS_SCHEMA, part)}"))
        conn.execute(sa.text(f"ALTER TABLE {target} RENAME TO {ident(part)}"))
        conn.execute(
            sa.text(
                f"ALTER TABLE {ident(STAGING_SCHEMA, part)} "
                f"SET SCHEMA {ident(SNAPSHOT_MONTHS_SCHEMA)}"
            )
        )
        conn.execute(
            sa.text(
                f"ALTER TABLE {ident(snapshot.name)} ATTACH PARTITION "
                f"{ident(SNAPSHOT_MONTHS_SCHEMA, part)} FOR VALUES IN ({_date_literal(partition)})"
            )
        )
        partition_table = ident(SNAPSHOT_MONTHS_SCHEMA, part)
        first_rows = preview(conn, partition_table)
    return {
        "as_of": str(as_of(partition)),
        "rows": rows,
        "preview": first_rows,
        "source": f"{DROPS_SCHEMA}.{source}",
        "partition table": f"{SNAPSHOT_MONTHS_SCHEMA}.{part}",
        "seconds": round(time.perf_counter() - started, 2),
    }


def _date_literal(partition: str) -> str:
    # DDL takes no bind parameters; the date comes from a validated partition key.
    return f"DATE '{as_of(partition).isoformat()}'"


def _asset_spec(spec: TableSpec) -> dg.AssetSpec:
    columns = ", ".join(c.name for c in spec.snapshot_columns())
    return dg.AssetSpec(
        spec.snapshot.name,
        group_name="snapshots",
        deps=[spec.name],
        kinds={"postgres"},
        metadata={
            "dagster/column_schema": column_schema(
                [spec.column("user_id"), *spec.snapshot_columns()],
                ("as_of", "date", "last day of the month"),
                ("event_timestamp", "timestamptz", "as_of at 00:00 UTC, for Feast"),
            )
        },
        description=f"`{spec.snapshot.name}`: each user's {spec.name} values at the end of the "
        f"month ({columns}), one row per (user_id, as_of), with a timestamptz `event_timestamp` "
        "for Feast. Rebuilt from the month's validated drop, so re-running an old month never "
        "picks up newer values.",
    )


@dg.multi_asset(
    name="snapshot_monthly_drop",
    specs=[_asset_spec(spec) for spec in SNAPSHOT_TABLES],
    partitions_def=monthly_partitions,
    can_subset=True,
)
def snapshot_monthly_drop(context: dg.AssetExecutionContext, database: StreamflowDatabase):
    """Rebuild the selected snapshot tables' month from the month's validated drop."""
    engine = database.engine()
    partition = context.partition_key
    selected = [
        s for s in SNAPSHOT_TABLES if dg.AssetKey(s.snapshot.name) in context.selected_asset_keys
    ]
    with partition_lock(engine, "snapshots", partition):
        ensure_tables(engine, *(snapshot_table_ddl(spec) for spec in selected))
        for spec in selected:
            drop_stale_staging(engine, spec.snapshot.name, partition)
        with ThreadPoolExecutor(BUILD_THREADS) as pool:
            built = list(pool.map(lambda spec: build_snapshot(engine, spec, partition), selected))
    for spec, metadata in zip(selected, built, strict=True):
        yield dg.MaterializeResult(asset_key=spec.snapshot.name, metadata=metadata)
