"""The database connection every part of the project uses, derived from the settings.

`database_url()` is the URL in use (the external one, or the embedded server's, started on demand);
`get_engine()` the SQLAlchemy engine over it; `feast_connection()` the same connection as the
parameters Feast's PostgreSQL stores take (its SQL registry uses `streamflow://`, see
feature_store/connection.py).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from streamflow_assets.settings import DATABASE_URL_VAR, Settings, redacted
from streamflow_assets.sql import BACKGROUND_CPUS_OPTION


class DatabaseUnavailableError(RuntimeError):
    """The configured database does not answer; the message says which setting to fix."""


def database_url(settings: Settings) -> URL:
    if settings.database_url is not None:
        return settings.database_url
    from streamflow_assets.embedded import ensure_server

    return ensure_server(settings.home)


def libpq_url(url: URL) -> str:
    """The URL as psql and libpq take it (no SQLAlchemy driver suffix)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


CLIENT_CHECK = "-c client_connection_check_interval=1000"
"""Sessions check every second, while a statement runs, that their client is still there: a
client killed while waiting for a lock (inside a publish) ends its session, and releases what it
holds, within a second instead of when the lock is finally granted (PostgreSQL 14+)."""


@functools.cache
def _engine(url: URL) -> Engine:
    return sa.create_engine(url, pool_pre_ping=True, connect_args={"options": CLIENT_CHECK})


def get_engine(settings: Settings) -> Engine:
    """The engine for the settings' database; checks once that it answers. Its background
    sessions (`sql.background_session`) keep to the settings' CPU limit."""
    url = database_url(settings)
    engine = _engine(url)
    check_connection(engine, explicit=settings.database_url is not None)
    if settings.background_cpus is not None:
        return engine.execution_options(**{BACKGROUND_CPUS_OPTION: settings.background_cpus})
    return engine


def check_connection(engine: Engine, *, explicit: bool) -> None:
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        where = (
            f"{DATABASE_URL_VAR} ({redacted(engine.url)})"
            if explicit
            else f"the embedded PostgreSQL ({redacted(engine.url)})"
        )
        hint = (
            f"Fix {DATABASE_URL_VAR}, or unset it to use the embedded PostgreSQL."
            if explicit
            else "Run `streamflow db stop` and try again, or set "
            f"{DATABASE_URL_VAR} to an existing PostgreSQL."
        )
        raise DatabaseUnavailableError(f"cannot connect to {where}: {reason}. {hint}") from None


@dataclass(frozen=True)
class FeastConnection:
    """Connection parameters in the shape of Feast's PostgreSQL store configs."""

    host: str
    port: int
    database: str
    user: str
    password: str
    sslmode: str


def feast_connection(settings: Settings) -> FeastConnection:
    url = database_url(settings)
    query = dict(url.query)
    # A Unix-socket URL carries the socket folder as ?host=...; libpq takes it as the host.
    host = url.host or str(query.get("host") or "localhost")
    port = url.port or int(query.get("port") or 5432)
    return FeastConnection(
        host=host,
        port=port,
        database=url.database or "",
        user=url.username or "",
        password=url.password or "",
        # Feast's stores default to sslmode=require, which a local server refuses.
        sslmode=str(query.get("sslmode") or "prefer"),
    )
