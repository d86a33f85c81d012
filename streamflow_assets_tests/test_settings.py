"""Settings: defaults, and errors that name the variable to set."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from streamflow_assets.db import DatabaseUnavailableError, feast_connection, get_engine
from streamflow_assets.embedded import ensure_server
from streamflow_assets.settings import Settings, SettingsError, add_months, month_end

pytestmark = pytest.mark.smoke


def test_defaults_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings.database_url is None
    assert settings.home == tmp_path / ".streamflow"
    assert settings.drops_dir == tmp_path / "data" / "seeds"
    assert settings.output_dir == tmp_path / "data" / "processed"
    assert settings.first_month == date(2024, 1, 1)


def test_defaults_inside_a_project_are_relative_to_the_project_folder(tmp_path, monkeypatch):
    (tmp_path / "workspace.yaml").write_text("load_from: []\n")
    (tmp_path / "feature_repo").mkdir()
    monkeypatch.chdir(tmp_path / "feature_repo")
    settings = Settings.from_env({"STREAMFLOW_OUTPUT_DIR": "out"})
    assert settings.home == tmp_path / ".streamflow"
    assert settings.output_dir == tmp_path / "out"


def test_database_url_gets_the_psycopg_driver():
    settings = Settings.from_env(
        {"STREAMFLOW_DATABASE_URL": "postgresql://u:pw@db.example:6543/sf"}
    )
    assert settings.database_url.drivername == "postgresql+psycopg"
    assert settings.database_url.host == "db.example"
    assert settings.database_url.port == 6543


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("mysql://root@localhost/sf", "must be a postgresql:// URL"),
        ("not a url", "is not a URL"),
        ("postgresql://user@localhost:5432", "names no database"),
    ],
)
def test_bad_database_url_names_the_variable(value, says):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"STREAMFLOW_DATABASE_URL": value})
    assert "STREAMFLOW_DATABASE_URL" in str(err.value)
    assert says in str(err.value)


@pytest.mark.parametrize("value", ["2024-13", "24-01", "2024/01", "January"])
def test_bad_first_month_names_the_variable(value):
    expected = "STREAMFLOW_FIRST_MONTH must be a month written YYYY-MM"
    with pytest.raises(SettingsError, match=expected):
        Settings.from_env({"STREAMFLOW_FIRST_MONTH": value})


@pytest.mark.parametrize("value", ["0", "121", "-3", "twelve", "1.5"])
def test_bad_model_window_names_the_variable(value):
    expected = "STREAMFLOW_MODEL_WINDOW must be a whole number of months from 1 to 120"
    with pytest.raises(SettingsError, match=expected):
        Settings.from_env({"STREAMFLOW_MODEL_WINDOW": value})
    assert Settings.from_env({}).model_window == 12
    assert Settings.from_env({"STREAMFLOW_MODEL_WINDOW": " 3 "}).model_window == 3


@pytest.mark.parametrize("value", ["0", "-1", "half", "nan", "1e9"])
def test_bad_background_cpus_names_the_variable(value):
    expected = "STREAMFLOW_BACKGROUND_CPUS must be a number of CPUs from 0.01 up"
    with pytest.raises(SettingsError, match=expected):
        Settings.from_env({"STREAMFLOW_BACKGROUND_CPUS": value})
    assert Settings.from_env({}).background_cpus is None
    assert Settings.from_env({"STREAMFLOW_BACKGROUND_CPUS": " 0.5 "}).background_cpus == 0.5


@pytest.mark.parametrize(
    ("var", "value", "says"),
    [
        ("STREAMFLOW_ONLINE_STORE", "memcached", "postgres, redis, redis_cluster"),
        ("STREAMFLOW_REDIS_URL", "http://127.0.0.1:6379/0", "redis://host:6379/0"),
        ("STREAMFLOW_REDIS_URL", "redis://127.0.0.1:port/0", "redis://host:6379/0"),
        ("STREAMFLOW_REDIS_URL", "redis://127.0.0.1:6379/zero", "the database number"),
        ("STREAMFLOW_REDIS_URL", "http://me:s3cret@127.0.0.1:6379/0", "redis://host:6379/0"),
    ],
)
def test_bad_online_store_setting_names_the_variable(var, value, says):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({var: value})
    message = str(err.value)
    assert var in message and says in message
    assert repr(value.replace("me:s3cret@", "***@")) in message and "s3cret" not in message


def test_a_cluster_url_with_a_database_other_than_0_is_refused():
    cluster = {"STREAMFLOW_ONLINE_STORE": "redis_cluster"}
    with pytest.raises(SettingsError, match="STREAMFLOW_REDIS_URL: a Redis Cluster has only ") as e:
        Settings.from_env({**cluster, "STREAMFLOW_REDIS_URL": "redis://me:s3cret@h:7000/3"})
    assert "redis://***@h:7000/3" in str(e.value) and "s3cret" not in str(e.value)
    assert Settings.from_env({**cluster, "STREAMFLOW_REDIS_URL": "redis://h:7000/0"})
    assert Settings.from_env({**cluster, "STREAMFLOW_REDIS_URL": "redis://h:7000"})
    assert Settings.from_env({"STREAMFLOW_REDIS_URL": "redis://h:7000/3"}).redis_url.endswith("/3")


def test_redis_url_becomes_feasts_connection_string():
    from streamflow_assets.feature_store.connection import redis_connection_string

    assert redis_connection_string("redis://127.0.0.1:6379/3") == "127.0.0.1:6379,db=3"
    assert (
        redis_connection_string("rediss://user:s3cret@cache.internal:6380/0")
        == "cache.internal:6380,db=0,username=user,password=s3cret,ssl=true"
    )


def test_unreachable_database_names_the_variable_and_hides_the_password():
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    settings = Settings.from_env(
        {"STREAMFLOW_DATABASE_URL": "postgresql://sf:s3cret@127.0.0.1:1/streamflow"}
    )
    with pytest.raises(DatabaseUnavailableError) as err:
        get_engine(settings)
    message = str(err.value)
    assert "STREAMFLOW_DATABASE_URL" in message
    assert "127.0.0.1:1/streamflow" in message
    assert "s3cret" not in message


def test_cli_reports_a_bad_setting_in_one_line(tmp_path):
    env = {**os.environ, "STREAMFLOW_DATABASE_URL": "mysql://root@localhost/sf"}
    result = subprocess.run(
        [sys.executable, "-m", "streamflow_assets.cli", "db", "url"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "STREAMFLOW_DATABASE_URL must be a postgresql:// URL" in result.stderr


@pytest.mark.parametrize(
    ("month", "says"),
    [
        ("2024-13", "--month must be a month written YYYY-MM (like 2024-01), got '2024-13'"),
        ("2024-02", "--month 2024-02: "),
    ],
)
def test_run_refuses_a_bad_month_and_writes_nothing(tmp_path, month, says):
    # An empty drops folder and an unreachable database: the month is refused before either is
    # touched (no sample written, no connection tried).
    env = {
        **os.environ,
        "STREAMFLOW_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/nowhere",
        "STREAMFLOW_HOME": str(tmp_path / "home"),
        "STREAMFLOW_DROPS_DIR": str(tmp_path / "drops"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "streamflow_assets.cli", "run", "--month", month],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert says in result.stderr
    assert not (tmp_path / "drops").exists() or not any((tmp_path / "drops").iterdir())
    assert not (tmp_path / "home").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the traversal rule only applies when run as root")
def test_home_that_postgres_cannot_reach_names_the_variable_and_the_folder(tmp_path):
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    closed.chmod(0o700)
    with pytest.raises(SettingsError) as err:
        ensure_server(closed / "home")
    message = str(err.value)
    assert "STREAMFLOW_HOME" in message
    assert str(closed) in message
    assert oct(closed.stat().st_mode & 0o777) == "0o700", "nothing was opened up"


def test_feast_connection_for_a_tcp_url():
    settings = Settings.from_env(
        {"STREAMFLOW_DATABASE_URL": "postgresql://feast:pw@10.0.0.5:6000/fs?sslmode=require"}
    )
    conn = feast_connection(settings)
    assert (conn.host, conn.port, conn.database, conn.user, conn.password) == (
        "10.0.0.5",
        6000,
        "fs",
        "feast",
        "pw",
    )
    assert conn.sslmode == "require"


def test_feast_connection_for_a_socket_url_defaults_sslmode_to_prefer():
    settings = Settings.from_env(
        {"STREAMFLOW_DATABASE_URL": "postgresql://postgres@/streamflow?host=/run/pg&port=5433"}
    )
    conn = feast_connection(settings)
    assert (conn.host, conn.port, conn.sslmode) == ("/run/pg", 5433, "prefer")


@pytest.mark.parametrize(
    ("month", "n", "as_of"),
    [
        (date(2024, 1, 1), 0, date(2024, 1, 31)),
        (date(2024, 1, 1), 1, date(2024, 2, 29)),
        (date(2024, 1, 1), 11, date(2024, 12, 31)),
        (date(2024, 11, 1), 3, date(2025, 2, 28)),
    ],
)
def test_month_arithmetic(month, n, as_of):
    assert month_end(add_months(month, n)) == as_of


def test_relative_paths_resolve_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({"STREAMFLOW_DROPS_DIR": "drops"})
    assert settings.drops_dir == Path(tmp_path, "drops")
