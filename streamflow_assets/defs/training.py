"""Group `training`: the point-in-time-correct training CSV of each month."""

import dagster as dg

from streamflow_assets.checks import FEATURE_DRIFT, TRAINING_CHECKS
from streamflow_assets.defs.common import as_failures, check_result, check_spec, metadata
from streamflow_assets.defs.feature_store import feast_registry
from streamflow_assets.defs.partitions import monthly_partitions
from streamflow_assets.defs.resources import StreamflowSettings
from streamflow_assets.feature_store.repo import feature_store
from streamflow_assets.table_specs import LABELS


@dg.asset(
    group_name="training",
    partitions_def=monthly_partitions,
    deps=[feast_registry, LABELS.snapshot.name],
    kinds={"feast", "csv"},
    check_specs=[
        check_spec(check, "training_dataset") for check in [*TRAINING_CHECKS, FEATURE_DRIFT]
    ],
)
def training_dataset(context: dg.AssetExecutionContext, streamflow: StreamflowSettings):
    """The month's training CSV, `STREAMFLOW_OUTPUT_DIR/training_df_<as_of>.csv`: one row per
    user of the month's labels snapshot, every `churn_features` feature as of the month's end
    (never a later value), and the month's churn_label.

    Written only when its checks pass, and atomically (a reader never sees half a file)."""
    from streamflow_assets.feature_store.training import build_training_csv

    settings = streamflow.settings()
    with as_failures():
        result = build_training_csv(
            streamflow.engine(), feature_store(settings), settings.output_dir, context.partition_key
        )
        yield from (check_result(c, "training_dataset") for c in result.checks)
        if result.refused:
            raise result.refused
    yield dg.MaterializeResult(metadata=metadata(result.metadata))
