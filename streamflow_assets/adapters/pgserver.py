"""pgserver (PostgreSQL binaries from pip) for the embedded server: the only module that imports it.

Beyond its public `PostgresServer`, `initdb` and `pg_ctl`, we need where its binaries live (to
check that the server's system user can reach them), its reading of postmaster.pid, and its
helper that creates the system user PostgreSQL runs as when started by root.
"""

from __future__ import annotations

import warnings

from streamflow_assets.adapters import private_detail, require

SUPPORTED = ">=0.1.4,<0.2"

with warnings.catch_warnings():
    # pgserver asks platformdirs for a runtime folder at import; without XDG_RUNTIME_DIR
    # (containers, CI) platformdirs warns and falls back to /tmp, which is fine here.
    warnings.simplefilter("ignore")
    import pgserver
    from pgserver import PostgresServer, initdb, pg_ctl
    from pgserver import _commands as _pgserver_commands
    from pgserver import utils as _pgserver_utils

__all__ = [
    "POSTGRES_BIN_PATH",
    "PostgresServer",
    "PostmasterInfo",
    "ensure_user_exists",
    "initdb",
    "pg_ctl",
]


def check(installed: str | None = None) -> None:
    """pgserver is a version we know, with the private details used here."""
    require("pgserver", SUPPORTED, installed)
    private_detail(
        "pgserver",
        "pgserver._commands.POSTGRES_BIN_PATH",
        hasattr(_pgserver_commands, "POSTGRES_BIN_PATH"),
    )
    for name in ("PostmasterInfo", "ensure_user_exists"):
        private_detail("pgserver", f"pgserver.utils.{name}", hasattr(_pgserver_utils, name))
    private_detail(
        "pgserver",
        "PostmasterInfo.read_from_pgdata",
        hasattr(getattr(_pgserver_utils, "PostmasterInfo", None), "read_from_pgdata"),
    )


check()

POSTGRES_BIN_PATH = _pgserver_commands.POSTGRES_BIN_PATH
PostmasterInfo = _pgserver_utils.PostmasterInfo
ensure_user_exists = _pgserver_utils.ensure_user_exists
del pgserver
