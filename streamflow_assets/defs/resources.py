"""The one resource: the project's settings, as fields the UI shows, and the database they name."""

from __future__ import annotations

import os

import dagster as dg
from pydantic import PrivateAttr
from sqlalchemy.engine import Engine

from streamflow_assets.db import get_engine
from streamflow_assets.defs.dead_runs import tag_run_process
from streamflow_assets.settings import (
    BACKGROUND_CPUS_VAR,
    DATABASE_URL_VAR,
    DEFAULTS,
    DROPS_DIR_VAR,
    FEATURE_REPO_VAR,
    FIRST_MONTH_VAR,
    HOME_VAR,
    MODEL_WINDOW_VAR,
    ONLINE_STORE_VAR,
    OUTPUT_DIR_VAR,
    REDIS_URL_VAR,
    Settings,
)


class StreamflowSettings(dg.ConfigurableResource):
    """The PostgreSQL of STREAMFLOW_DATABASE_URL (or the embedded one, started on first use), the
    drops folder, the first month, the output folder, the model window and the online store.
    Each field is the environment variable of the same name when it is set, else its default;
    an empty database_url means the embedded PostgreSQL under `home`."""

    database_url: str = ""
    home: str = DEFAULTS[HOME_VAR]
    drops_dir: str = DEFAULTS[DROPS_DIR_VAR]
    first_month: str = DEFAULTS[FIRST_MONTH_VAR]
    output_dir: str = DEFAULTS[OUTPUT_DIR_VAR]
    feature_repo: str = ""
    model_window: str = DEFAULTS[MODEL_WINDOW_VAR]
    online_store: str = DEFAULTS[ONLINE_STORE_VAR]
    redis_url: str = DEFAULTS[REDIS_URL_VAR]
    background_cpus: str = DEFAULTS[BACKGROUND_CPUS_VAR]

    _settings: Settings | None = PrivateAttr(default=None)

    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_values(
                {
                    DATABASE_URL_VAR: self.database_url,
                    HOME_VAR: self.home,
                    DROPS_DIR_VAR: self.drops_dir,
                    FIRST_MONTH_VAR: self.first_month,
                    OUTPUT_DIR_VAR: self.output_dir,
                    FEATURE_REPO_VAR: self.feature_repo,
                    MODEL_WINDOW_VAR: self.model_window,
                    ONLINE_STORE_VAR: self.online_store,
                    REDIS_URL_VAR: self.redis_url,
                    BACKGROUND_CPUS_VAR: self.background_cpus,
                }
            )
        return self._settings

    def engine(self) -> Engine:
        return get_engine(self.settings())

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # The run's worker process, named on the run: `dead_run_sensor` marks the run failed
        # if this process dies before the run ends.
        if context.instance is not None and context.run is not None:
            tag_run_process(context.instance, context.run.run_id)


_FIELDS = {
    "database_url": DATABASE_URL_VAR,
    "home": HOME_VAR,
    "drops_dir": DROPS_DIR_VAR,
    "first_month": FIRST_MONTH_VAR,
    "output_dir": OUTPUT_DIR_VAR,
    "feature_repo": FEATURE_REPO_VAR,
    "model_window": MODEL_WINDOW_VAR,
    "online_store": ONLINE_STORE_VAR,
    "redis_url": REDIS_URL_VAR,
    "background_cpus": BACKGROUND_CPUS_VAR,
}


def streamflow_settings() -> StreamflowSettings:
    """The resource over the environment: a field whose variable is set reads it through
    `dg.EnvVar` (the UI shows the variable's name, never a password), the others keep their
    defaults (an unset EnvVar would be an error, and the embedded default needs none)."""
    return StreamflowSettings(
        **{
            field: dg.EnvVar(var)
            for field, var in _FIELDS.items()
            if os.environ.get(var, "").strip()
        }
    )
