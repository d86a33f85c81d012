"""Group `snapshots`: the five monthly snapshot tables, one multi-asset over the table specs."""

import dagster as dg

from streamflow_assets.checks import MATCHES_VALIDATED_DROP
from streamflow_assets.defs.common import (
    as_failures,
    check_result,
    check_spec,
    column_schema,
    metadata,
)
from streamflow_assets.defs.partitions import monthly_partitions
from streamflow_assets.defs.resources import StreamflowSettings
from streamflow_assets.table_specs import SNAPSHOT_TABLES, TableSpec
from streamflow_assets.warehouse import partition_lock


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
    check_specs=[
        check_spec(MATCHES_VALIDATED_DROP, spec.snapshot.name) for spec in SNAPSHOT_TABLES
    ],
    partitions_def=monthly_partitions,
    can_subset=True,
)
def snapshot_monthly_drop(context: dg.AssetExecutionContext, streamflow: StreamflowSettings):
    """Rebuild the selected snapshot tables' month from the month's validated drop."""
    from streamflow_assets.snapshots import build_snapshots

    engine, partition = streamflow.engine(), context.partition_key
    selected = [
        s for s in SNAPSHOT_TABLES if dg.AssetKey(s.snapshot.name) in context.selected_asset_keys
    ]
    with as_failures(), partition_lock(engine, "snapshots", partition):
        built = build_snapshots(engine, selected, partition)
    for spec, (values, _) in zip(selected, built, strict=True):
        yield dg.MaterializeResult(asset_key=spec.snapshot.name, metadata=metadata(values))
    for _, outcome in built:
        key = dg.AssetCheckKey(dg.AssetKey(outcome.asset), outcome.name)
        if key in context.selected_asset_check_keys:
            yield check_result(outcome)
