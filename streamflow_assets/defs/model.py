"""Group `model`: the month's churn model (a candidate, champion or not) and the month's scores.

`churn_model` M declares what it reads: the training sets of M (its hold-out) and of up to
STREAMFLOW_MODEL_WINDOW months before it (read when the code location is imported), and itself
for M-1 (the champion it must beat). A newer training set or model for an earlier month makes the
later models stale; with automation on, both assets follow their inputs for every month, so
months loaded in any order end with every model trained on exactly its window.
"""

import dagster as dg

from streamflow_assets.checks import (
    BEATS_BASELINES,
    BEATS_CHAMPION,
    ONE_SCORE_PER_USER,
    WELL_CALIBRATED,
)
from streamflow_assets.defs.common import as_failures, check_result, check_spec, metadata
from streamflow_assets.defs.partitions import monthly_partitions
from streamflow_assets.defs.resources import StreamflowSettings
from streamflow_assets.defs.training import training_dataset
from streamflow_assets.settings import Settings
from streamflow_assets.warehouse import partition_lock

MODEL_WINDOW = Settings.from_env().model_window

FOLLOW_INPUTS = (
    dg.AutomationCondition.eager()
    .without(dg.AutomationCondition.in_latest_time_window())
    .with_label("eager, every month")
)
"""Eager for every month, not only the newest: a month whose inputs changed (a new training set,
a re-decided month before it) is run again, once nothing upstream is missing or in progress."""


@dg.asset(
    group_name="model",
    partitions_def=monthly_partitions,
    deps=[
        dg.AssetDep(
            training_dataset,
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-MODEL_WINDOW, end_offset=0, allow_nonexistent_upstream_partitions=True
            ),
        ),
        dg.AssetDep(
            "churn_model",
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True
            ),
        ),
    ],
    kinds={"scikitlearn", "mlflow"},
    automation_condition=FOLLOW_INPUTS,
    check_specs=[
        check_spec(BEATS_BASELINES, "churn_model"),
        check_spec(BEATS_CHAMPION, "churn_model"),
        check_spec(WELL_CALIBRATED, "churn_model"),
    ],
)
def churn_model(context: dg.AssetExecutionContext, streamflow: StreamflowSettings):
    """The month's candidate churn model, a version of the registered MLflow model
    `churn_model`: a scikit-learn pipeline (one-hot encoding of the categories, then
    gradient-boosted trees) trained on the training sets of the months before this one inside
    the model window, evaluated on this month (the first month: a seeded 80/20 split).

    Promoted (alias `champion`) only when it beats the baselines and the champion as of the
    month before on this month's hold-out. A candidate that loses is recorded and the month
    completes: its checks say it lost."""
    from streamflow_assets.model import train_month

    partition = context.partition_key
    with as_failures(), partition_lock(streamflow.engine(), "churn_model", partition):
        result = train_month(streamflow.settings(), partition)
    yield from (check_result(c, "churn_model") for c in result.checks)
    yield dg.MaterializeResult(metadata=metadata(result.metadata))


@dg.asset(
    group_name="model",
    partitions_def=monthly_partitions,
    deps=[churn_model],
    kinds={"scikitlearn", "postgres"},
    automation_condition=FOLLOW_INPUTS,
    check_specs=[check_spec(ONE_SCORE_PER_USER, "churn_scores")],
)
def churn_scores(context: dg.AssetExecutionContext, streamflow: StreamflowSettings):
    """`churn_scores`: every user of the month scored by the champion as of the month (user_id,
    as_of, score, model_version), from the features of the month's training CSV. Re-running a
    month replaces exactly that month's rows."""
    from streamflow_assets.model import score_month

    engine, partition = streamflow.engine(), context.partition_key
    with as_failures(), partition_lock(engine, "churn_scores", partition):
        result = score_month(engine, streamflow.settings(), partition)
    yield dg.MaterializeResult(metadata=metadata(result.metadata))
    yield from (check_result(c, "churn_scores") for c in result.checks)
