"""Group `ingestion`: the six live tables as one monthly multi-asset over the table specs.

A partition is one month's drop, written-audited-published as a whole (streamflow_assets/ingestion):
the checks' results are recorded for the month, and a blocking failure stops it before anything
is published.
"""

import time

import dagster as dg

from streamflow_assets.checks import drop_checks
from streamflow_assets.defs.common import (
    as_failures,
    check_spec,
    column_schema,
    metadata,
)
from streamflow_assets.defs.partitions import monthly_partitions
from streamflow_assets.defs.resources import StreamflowSettings
from streamflow_assets.table_specs import TABLES, TableSpec
from streamflow_assets.warehouse import partition_lock


def _asset_spec(spec: TableSpec) -> dg.AssetSpec:
    return dg.AssetSpec(
        spec.name,
        group_name="ingestion",
        kinds={"postgres", "csv"},
        metadata={
            "dagster/column_schema": column_schema(
                spec.columns, ("as_of", "date", "as_of of the newest month that listed the user")
            )
        },
        description=f"Live table `{spec.name}`: {spec.description} Each month's "
        f"`{spec.file_name}` is staged, validated and merged in with the rest of the drop; a user "
        "keeps the values of the newest month that listed them.",
    )


@dg.multi_asset(
    name="ingest_monthly_drop",
    specs=[_asset_spec(spec) for spec in TABLES],
    check_specs=[
        check_spec(check, spec.name)
        for spec in TABLES
        for check in drop_checks(spec.name, has_label=spec.label_column is not None)
    ],
    partitions_def=monthly_partitions,
    can_subset=True,
)
def ingest_monthly_drop(context: dg.AssetExecutionContext, streamflow: StreamflowSettings):
    """Stage, validate and publish a month's drop: all selected files, or none of them."""
    from streamflow_assets.ingestion.ingest import prepare, publish, refuse_if_blocked, staged_drop

    started = time.perf_counter()
    settings, engine, partition = streamflow.settings(), streamflow.engine(), context.partition_key
    selected = [s for s in TABLES if dg.AssetKey(s.name) in context.selected_asset_keys]
    with as_failures(), partition_lock(engine, "ingestion", partition):
        prepare(engine, selected, partition)
        with staged_drop(settings, engine, selected, partition) as files:
            for staged in files:
                for report in staged.reports:
                    key = dg.AssetCheckKey(dg.AssetKey(staged.spec.name), report.check.name)
                    if key in context.selected_asset_check_keys:
                        yield _check_result(key, report)
            refuse_if_blocked(files)
            published = publish(engine, files, partition, started)
    for table, values in published.items():
        yield dg.MaterializeResult(asset_key=table, metadata=metadata(values))


def _check_result(key: dg.AssetCheckKey, report) -> dg.AssetCheckResult:
    failures = report.failures
    values: dict = {
        "evaluated": report.evaluated,
        "expectations": len(report.outcomes),
        "failed expectations": len(failures),
        "unexpected rows": sum(o.unexpected_count for o in failures),
    }
    if (table := report.failure_table()) is not None:
        values["failures"] = dg.MetadataValue.md(table)
    values.update(metadata(report.numbers))
    return dg.AssetCheckResult(
        asset_key=key.asset_key,
        check_name=key.name,
        passed=report.passed,
        # Not evaluated is not passed, but it is not this check's failure either: a warning.
        severity=dg.AssetCheckSeverity.ERROR
        if report.check.blocking and report.evaluated
        else dg.AssetCheckSeverity.WARN,
        metadata=values,
        description=report.note or report.check.description,
    )
