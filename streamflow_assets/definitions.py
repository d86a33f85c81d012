"""The StreamFlow code location: everything Dagster knows about, assembled in one place."""

import dagster as dg

from streamflow_assets.ingestion.assets import ingestion_assets
from streamflow_assets.resources import StreamflowDatabase
from streamflow_assets.snapshots import snapshot_assets

defs = dg.Definitions(
    assets=[*ingestion_assets, *snapshot_assets],
    resources={"database": StreamflowDatabase()},
)
