"""The StreamFlow code location: everything Dagster knows about, assembled in one place."""

import dagster as dg

from streamflow_assets.ingestion.assets import ingest_monthly_drop
from streamflow_assets.resources import StreamflowDatabase
from streamflow_assets.snapshots import snapshot_assets

defs = dg.Definitions(
    assets=[ingest_monthly_drop, *snapshot_assets],
    resources={"database": StreamflowDatabase()},
)
