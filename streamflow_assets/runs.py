"""Running the asset graph for a month in this process (`streamflow run`, benchmarks, tests)."""

import dagster as dg

from streamflow_assets.defs.dead_runs import fail_dead_runs, process_tags

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
"""Console logging for critical events only; the whole event log still goes to the instance."""


def materialize_month(
    partition: str,
    *,
    selection: str | dg.AssetSelection | None = None,
    instance: dg.DagsterInstance | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize one monthly partition of every asset (or of a selection, like
    "group:ingestion") with the settings in the environment now; failures are in the result."""
    from streamflow_assets.definitions import defs
    from streamflow_assets.defs.resources import streamflow_settings

    if instance is not None:
        fail_dead_runs(instance)
    return dg.materialize(
        defs.assets,
        partition_key=partition,
        selection=selection,
        resources={"streamflow": streamflow_settings()},
        instance=instance,
        raise_on_error=False,
        run_config=QUIET,
        tags=process_tags(),
    )
