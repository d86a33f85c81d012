"""Test harness: a fresh PostgreSQL database per test session.

The database is created on the server of STREAMFLOW_TEST_DATABASE_URL when it is set (CI points it
at the machine's local server), else on an embedded PostgreSQL kept under a test home of its own,
so the tests never touch the developer's `.streamflow` server.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL

from streamflow_assets.db import libpq_url
from streamflow_assets.embedded import ensure_server, running_server, stop_server
from streamflow_assets.settings import Settings, parse_database_url

TEST_URL_VAR = "STREAMFLOW_TEST_DATABASE_URL"


def traversable_tmp_dir(prefix: str) -> Path:
    """A new folder the embedded PostgreSQL's system user can enter when tests run as root."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def server_url() -> Iterator[URL]:
    """A URL on the test server; its database is only used to create and drop others."""
    raw = os.environ.get(TEST_URL_VAR, "")
    if raw:
        yield parse_database_url(raw)
        return
    home = Path(tempfile.gettempdir()) / f"streamflow-test-home-{os.getuid()}"
    home.mkdir(mode=0o755, exist_ok=True)
    started_here = running_server(home) is None
    url = ensure_server(home)
    yield url
    if started_here:
        stop_server(home)


@pytest.fixture(scope="session")
def database_url(server_url: URL) -> Iterator[URL]:
    """A database created for this test session and dropped after it."""
    url = create_database(server_url)
    yield url
    drop_database(server_url, url)


def create_database(server_url: URL, template: str | None = None) -> URL:
    """A new database on the test server, optionally a copy of another."""
    name = f"streamflow_test_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{copy}')
    return server_url.set(database=name)


def drop_database(server_url: URL, url: URL) -> None:
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')


@pytest.fixture
def project_env(
    monkeypatch: pytest.MonkeyPatch, database_url: URL, tmp_path: Path
) -> dict[str, str]:
    """The settings environment of one test: the session database, folders under tmp_path."""
    env = {
        "STREAMFLOW_DATABASE_URL": libpq_url(database_url),
        "STREAMFLOW_HOME": str(tmp_path / "home"),
        "STREAMFLOW_DROPS_DIR": str(tmp_path / "drops"),
        "STREAMFLOW_OUTPUT_DIR": str(tmp_path / "processed"),
        "STREAMFLOW_FIRST_MONTH": "2024-01",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def settings(project_env: dict[str, str]) -> Settings:
    return Settings.from_env()
