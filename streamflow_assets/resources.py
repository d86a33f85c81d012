"""Dagster resources: the project's database, as the settings describe it."""

from __future__ import annotations

import dagster as dg
from sqlalchemy.engine import Engine

from streamflow_assets.db import get_engine
from streamflow_assets.settings import Settings


class StreamflowDatabase(dg.ConfigurableResource):
    """The PostgreSQL of STREAMFLOW_DATABASE_URL, or the embedded one (started on first use)."""

    def settings(self) -> Settings:
        return Settings.from_env()

    def engine(self) -> Engine:
        return get_engine(self.settings())
