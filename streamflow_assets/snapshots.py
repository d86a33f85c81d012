"""The five monthly snapshot assets: month M's values of a table, kept per (user_id, as_of).

A snapshot is rebuilt from the month's validated drop (`drops.<table>_<YYYY_MM>`), never from the
live table, so snapshot M holds exactly month M's values whatever has been ingested since.
"""

import time
from datetime import UTC, datetime
from datetime import time as clock

import dagster as dg
import sqlalchemy as sa

from streamflow_assets.partitions import as_of, monthly_partitions
from streamflow_assets.resources import StreamflowDatabase
from streamflow_assets.table_specs import SNAPSHOT_TABLES, TableSpec
from streamflow_assets.warehouse import (
    DROPS_SCHEMA,
    ensure_tables,
    ident,
    month_table,
    partition_lock,
    snapshot_table_ddl,
    table_exists,
)


def event_timestamp(partition: str) -> datetime:
    """The timestamptz Feast sees for a snapshot: as_of at midnight UTC."""
    return datetime.combine(as_of(partition), clock(0), tzinfo=UTC)


def build_snapshot_asset(spec: TableSpec) -> dg.AssetsDefinition:
    snapshot = spec.snapshot
    assert snapshot is not None
    columns = ", ".join(ident(c.name) for c in spec.snapshot_columns())

    @dg.asset(
        name=snapshot.name,
        group_name="snapshots",
        partitions_def=monthly_partitions,
        deps=[dg.AssetKey(spec.name)],
        kinds={"postgres"},
        description=f"`{snapshot.name}`: each user's {spec.name} values as of the end of the "
        f"month (columns {', '.join(c.name for c in spec.snapshot_columns())}), one row per "
        "(user_id, as_of). Rebuilt from the month's validated drop, so re-running an old month "
        "never picks up newer values.",
    )
    def _asset(context: dg.AssetExecutionContext, database: StreamflowDatabase):
        started = time.perf_counter()
        engine = database.engine()
        partition = context.partition_key
        source = month_table(spec, partition)
        target = ident(snapshot.name)
        with partition_lock(engine, snapshot.name, partition):
            ensure_tables(engine, snapshot_table_ddl(spec))
            with engine.begin() as conn:
                if not table_exists(conn, DROPS_SCHEMA, source):
                    raise dg.Failure(
                        f"{snapshot.name} {partition} is built from the month's validated "
                        f"{spec.file_name}, which is not loaded: materialize {spec.name} for "
                        f"{partition} first"
                    )
                params = {"as_of": as_of(partition), "ts": event_timestamp(partition)}
                conn.execute(sa.text(f"DELETE FROM {target} WHERE as_of = :as_of"), params)
                rows = conn.execute(
                    sa.text(
                        f"INSERT INTO {target} (user_id, as_of, event_timestamp, {columns}) "
                        f"SELECT user_id, :as_of, :ts, {columns} "
                        f"FROM {ident(DROPS_SCHEMA, source)}"
                    ),
                    params,
                ).rowcount
        return dg.MaterializeResult(
            metadata={
                "as_of": str(as_of(partition)),
                "rows": rows,
                "source": f"{DROPS_SCHEMA}.{source}",
                "seconds": round(time.perf_counter() - started, 2),
            }
        )

    return _asset


snapshot_assets = [build_snapshot_asset(spec) for spec in SNAPSHOT_TABLES]
