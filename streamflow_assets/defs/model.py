"""Group `model`: the month's churn model and the month's scores."""

import dagster as dg

from streamflow_assets.defs.common import as_failures, check_result, check_spec, metadata
from streamflow_assets.defs.partitions import monthly_partitions
from streamflow_assets.defs.resources import StreamflowSettings
from streamflow_assets.defs.training import training_dataset
from streamflow_assets.model import BEATS_BASELINES, score_month, train_month


@dg.asset(
    group_name="model",
    partitions_def=monthly_partitions,
    deps=[training_dataset],
    kinds={"scikitlearn"},
    check_specs=[check_spec("beats_baselines", "churn_model", BEATS_BASELINES, blocking=True)],
)
def churn_model(context: dg.AssetExecutionContext, streamflow: StreamflowSettings):
    """The month's churn model: a scikit-learn pipeline (one-hot encoding of the categories,
    then gradient-boosted trees) trained on the training CSVs of every month before this one and
    evaluated on this month (the first month: a seeded 80/20 split of its users). Saved under
    `STREAMFLOW_OUTPUT_DIR/models/<month>/` with its card (features, feature service, training
    months, metrics) only when it beats the baselines."""
    settings = streamflow.settings()
    with as_failures():
        result = train_month(settings.output_dir, settings.first_month, context.partition_key)
        yield from (check_result(c, "churn_model") for c in result.checks)
        if result.refused:
            raise result.refused
    yield dg.MaterializeResult(metadata=metadata(result.metadata))


@dg.asset(
    group_name="model",
    partitions_def=monthly_partitions,
    deps=[churn_model],
    kinds={"scikitlearn", "postgres"},
)
def churn_scores(context: dg.AssetExecutionContext, streamflow: StreamflowSettings):
    """`churn_scores`: every user of the month scored by the month's model (user_id, as_of,
    score, model_version), from the features of the month's training CSV. Re-running a month
    replaces exactly that month's rows."""
    with as_failures():
        written = score_month(
            streamflow.engine(), streamflow.settings().output_dir, context.partition_key
        )
    return dg.MaterializeResult(metadata=metadata(written))
