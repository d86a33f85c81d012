"""Feast's stores and SQL registry on the database the project's settings name.

`feature_store.yaml` holds no host, user or password. Feast expands `${VAR}` in it, but only with
`os.path.expandvars`: no defaults, and an unset variable stays a literal `${VAR}`, so the embedded
default (no variable set at all) could not work that way. Instead:

- the online and offline stores are named by class path (`type: streamflow_assets...`); their
  config classes are Feast's PostgreSQL configs, filled from `Settings.from_env()` (starting the
  embedded PostgreSQL if that is the setting) for every field the YAML leaves out;
- the online store's config class is looked up when Feast reads the YAML: with
  STREAMFLOW_ONLINE_STORE=redis (or redis_cluster) it is Feast's Redis config instead, its
  connection string made from STREAMFLOW_REDIS_URL (the PostgreSQL fields of the YAML dropped);
- the SQL registry's path is `streamflow://`, a SQLAlchemy URL whose dialect (registered as an
  entry point in pyproject.toml, so the `feast` CLI finds it too) is Feast's usual psycopg one,
  connecting to the settings' database.

So `STREAMFLOW_DATABASE_URL` (or nothing) configures Dagster, Feast, the API and the tests alike.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import psycopg
import psycopg.sql
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres import (
    PostgreSQLOfflineStore,
    PostgreSQLOfflineStoreConfig,
)
from feast.infra.online_stores.postgres_online_store.postgres import (
    PostgreSQLOnlineStore,
    PostgreSQLOnlineStoreConfig,
)
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
from pydantic import model_validator
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from streamflow_assets.db import database_url, feast_connection
from streamflow_assets.settings import Settings


def _settings_connection(values: Any) -> Any:
    if not isinstance(values, dict):
        return values
    conn = feast_connection(Settings.from_env())
    defaults = {
        "host": conn.host,
        "port": conn.port,
        "database": conn.database,
        "user": conn.user,
        "password": conn.password,
        "sslmode": conn.sslmode,
    }
    # Feast's PostgreSQL code checks `type == "postgres"`; the class is what makes it ours.
    return {**defaults, **values, "type": "postgres"}


class StreamflowPostgresOnlineStoreConfig(PostgreSQLOnlineStoreConfig):
    """Feast's PostgreSQL online store config; connection fields default from the settings."""

    _from_settings = model_validator(mode="before")(_settings_connection)


class StreamflowPostgresOnlineStore(PostgreSQLOnlineStore):
    """Feast's PostgreSQL online store, unchanged (Feast finds it from the config class name)."""


def _settings_redis(values: Any) -> Any:
    if not isinstance(values, dict):
        return values
    settings = Settings.from_env()
    redis_fields = set(RedisOnlineStoreConfig.model_fields) - {"type"}
    return {
        "redis_type": "redis_cluster" if settings.online_store == "redis_cluster" else "redis",
        "connection_string": redis_connection_string(settings.redis_url),
        **{k: v for k, v in values.items() if k in redis_fields},
        "type": "redis",
    }


def redis_connection_string(url: str) -> str:
    """Feast's Redis connection string (`host:port,db=0,password=...`) of a redis:// URL."""
    from redis.connection import parse_url

    parts = parse_url(url)
    options = [f"{parts.get('host', '127.0.0.1')}:{parts.get('port', 6379)}"]
    for name in ("db", "username", "password"):
        if parts.get(name) not in (None, ""):
            options.append(f"{name}={parts[name]}")
    if url.startswith("rediss://"):
        options.append("ssl=true")
    return ",".join(options)


class StreamflowRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    """Feast's Redis online store config; the server (or cluster) from the settings."""

    _from_settings = model_validator(mode="before")(_settings_redis)


def uses_redis(config: Any) -> bool:
    """Whether a Feast RepoConfig's online store is Redis (STREAMFLOW_ONLINE_STORE)."""
    return isinstance(config.online_store, RedisOnlineStoreConfig)


class StreamflowRedisOnlineStore(RedisOnlineStore):
    """Feast's Redis online store, unchanged (Feast finds it from the config class name)."""


class StreamflowOfflineStoreConfig(PostgreSQLOfflineStoreConfig):
    """Feast's PostgreSQL offline store config; connection fields default from the settings."""

    _from_settings = model_validator(mode="before")(_settings_connection)


class StreamflowOfflineStore(PostgreSQLOfflineStore):
    """Feast's PostgreSQL offline store, unchanged (Feast finds it from the config class name)."""


class SettingsDialect(PGDialect_psycopg):
    """`streamflow://?schema=NAME`: the psycopg dialect, connected to the database the settings
    name, with its tables in schema NAME (created on first use)."""

    supports_statement_cache = True

    def create_connect_args(self, url):
        args, kwargs = super().create_connect_args(database_url(Settings.from_env()))
        self._registry_schema = url.query.get("schema")
        return args, kwargs

    def on_connect(self):
        base = super().on_connect()
        schema = self._registry_schema

        def connect(dbapi_conn):
            if base is not None:
                base(dbapi_conn)
            if schema:
                _use_schema(dbapi_conn, schema)

        return connect


def _use_schema(dbapi_conn, schema: str) -> None:
    name = psycopg.sql.Identifier(schema)
    autocommit = dbapi_conn.autocommit
    dbapi_conn.autocommit = True
    try:
        with dbapi_conn.cursor() as cur:
            # UniqueViolation: another process created it at the same moment.
            with contextlib.suppress(psycopg.errors.UniqueViolation):
                cur.execute(psycopg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name))
            cur.execute(psycopg.sql.SQL("SET search_path TO {}").format(name))
    finally:
        dbapi_conn.autocommit = autocommit


@functools.cache
def _online_store_classes(online_store: str) -> dict[str, type]:
    """The config and store classes Feast gets for feature_store.yaml's online store type. Feast
    wants the config class named after the type (`StreamflowOnlineStoreConfig`) and finds the
    store by that name less `Config`."""
    if online_store == "postgres":
        config, store = StreamflowPostgresOnlineStoreConfig, StreamflowPostgresOnlineStore
    else:
        config, store = StreamflowRedisOnlineStoreConfig, StreamflowRedisOnlineStore
    named = type("StreamflowOnlineStoreConfig", (config,), {"__module__": __name__})
    return {"StreamflowOnlineStoreConfig": named, "StreamflowOnlineStore": store}


def __getattr__(name: str) -> Any:
    # feature_store.yaml's `type: ...connection.StreamflowOnlineStore`: the store the settings
    # choose (STREAMFLOW_ONLINE_STORE), looked up when Feast reads the YAML.
    classes = _online_store_classes(Settings.from_env().online_store)
    if name in classes:
        return classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
