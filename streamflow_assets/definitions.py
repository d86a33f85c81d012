"""The StreamFlow code location: everything Dagster knows about, assembled in one place."""

import dagster as dg

from streamflow_assets.defs.automation import (
    dead_run_sensor,
    monthly_graph,
    monthly_schedule,
    new_drop_sensor,
    online_freshness_sensor,
)
from streamflow_assets.defs.feature_store import (
    feast_registry,
    online_features,
    online_freshness_checks,
)
from streamflow_assets.defs.ingestion import ingest_monthly_drop
from streamflow_assets.defs.model import churn_model, churn_scores
from streamflow_assets.defs.resources import streamflow_settings
from streamflow_assets.defs.snapshots import snapshot_monthly_drop
from streamflow_assets.defs.training import training_dataset

OWNER = "team:feature-platform"

defs = dg.Definitions(
    # Project-wide policy, in one place: every asset has the feature platform team as owner.
    assets=dg.map_asset_specs(
        lambda spec: spec.replace_attributes(owners=[OWNER]),
        [
            ingest_monthly_drop,
            snapshot_monthly_drop,
            feast_registry,
            online_features,
            training_dataset,
            churn_model,
            churn_scores,
        ],
    ),
    asset_checks=online_freshness_checks,
    jobs=[monthly_graph],
    schedules=[monthly_schedule],
    sensors=[new_drop_sensor, online_freshness_sensor, dead_run_sensor],
    resources={"streamflow": streamflow_settings()},
    # The work happens inside PostgreSQL; a process per step would cost more than the step
    # (a month of 2,000 users: 32 s with the multiprocess executor, 3 s in process).
    executor=dg.in_process_executor,
)
