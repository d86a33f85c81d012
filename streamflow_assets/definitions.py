"""The StreamFlow code location: everything Dagster knows about, assembled in one place."""

import dagster as dg

from streamflow_assets.resources import StreamflowDatabase

defs = dg.Definitions(
    resources={"database": StreamflowDatabase()},
)
