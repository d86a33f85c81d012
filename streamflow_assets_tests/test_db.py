"""The one connection module: SQLAlchemy and Feast both reach the configured database."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from feast.infra.utils.postgres.connection_utils import _get_conn
from feast.infra.utils.postgres.postgres_config import PostgreSQLConfig

from streamflow_assets.db import feast_connection, get_engine

pytestmark = pytest.mark.smoke


def test_engine_reaches_the_session_database(settings, database_url):
    engine = get_engine(settings)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT current_database()")).scalar_one() == (
            database_url.database
        )


def test_feast_connects_with_the_derived_parameters(settings, database_url):
    params = feast_connection(settings)
    config = PostgreSQLConfig(
        host=params.host,
        port=params.port,
        database=params.database,
        user=params.user,
        password=params.password,
        sslmode=params.sslmode,
    )
    with _get_conn(config) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (database_url.database,)


def test_the_registry_url_reaches_the_settings_database_in_its_own_schema(settings, database_url):
    """feature_store.yaml's `streamflow://?schema=feast_registry`, opened as Feast opens it."""
    registry = sa.create_engine("streamflow://?schema=feast_registry")
    with registry.connect() as conn:
        database, path = conn.execute(
            sa.text("SELECT current_database(), current_setting('search_path')")
        ).one()
    registry.dispose()
    assert database == database_url.database
    assert path == "feast_registry"
