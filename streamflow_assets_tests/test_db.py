"""The one connection module: SQLAlchemy and Feast both reach the configured database."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from feast.infra.utils.postgres.connection_utils import _get_conn
from feast.infra.utils.postgres.postgres_config import PostgreSQLConfig

from streamflow_assets.db import feast_connection, get_engine
from streamflow_assets.sql import (
    BACKGROUND_CPUS_OPTION,
    BACKGROUND_NICE,
    CPU_GROUP,
    background_cpu_limit,
    background_session,
    cpu_group,
)
from streamflow_bench.faults import lock_figures

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


WAIT_FOR_LOCK = """
import sys
import sqlalchemy as sa
from streamflow_assets.db import get_engine
from streamflow_assets.settings import Settings

with get_engine(Settings.from_env()).begin() as conn:
    print(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar(), flush=True)
    conn.execute(sa.text("LOCK TABLE held IN ACCESS EXCLUSIVE MODE"))
"""


def test_a_killed_client_waiting_for_a_lock_ends_its_session_within_seconds(settings):
    engine = get_engine(settings)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS held"))
        conn.execute(sa.text("CREATE TABLE held (x int)"))
    with engine.connect() as reader:
        reader.execute(sa.text("SELECT count(*) FROM held"))  # holds its lock until rollback
        client = subprocess.Popen(
            [sys.executable, "-c", WAIT_FOR_LOCK], stdout=subprocess.PIPE, text=True
        )
        backend = int(client.stdout.readline())
        with engine.connect() as watch:
            waiting = sa.text(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = :p"
            ).bindparams(p=backend)
            deadline = time.monotonic() + 30
            while watch.execute(waiting).scalar() != "Lock":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            client.kill()
            client.wait()
            killed = time.monotonic()
            while watch.execute(waiting).scalar() is not None:
                assert time.monotonic() - killed < 10, "the dead client's session lingers"
                time.sleep(0.05)
        reader.rollback()


def test_a_long_reader_delays_a_swap_and_readers_behind_it_get_through(database_url):
    figures = lock_figures(database_url, hold=2.0)
    assert figures.swap_seconds >= figures.held * 0.9  # the swap waited for the long reader
    assert figures.swap_attempts > 1  # by letting go and trying again, ...
    # ... so readers that came after it were answered while the long reader still held the
    # table (a swap queued on the lock would have held them up until the reader was done).
    assert figures.reads_while_held > 5
    assert figures.slowest_read_ms < figures.held * 1000 / 2
    # A client killed waiting inside its transaction: its session and locks go within seconds.
    assert figures.dead_session_gone_after < 10
    assert figures.blocked_read_waited < 10


def test_a_background_session_runs_niced_and_is_not_pooled(settings):
    engine = get_engine(settings)
    with background_session(engine) as conn:
        backend = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        if os.geteuid() != 0 and os.stat(f"/proc/{backend}").st_uid != os.getuid():
            pytest.skip("the test server's processes are another user's: not ours to renice")
        assert os.getpriority(os.PRIO_PROCESS, backend) == BACKGROUND_NICE
    with engine.connect() as conn:
        other = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        assert other != backend
        assert os.getpriority(os.PRIO_PROCESS, other) == 0
    # What a run's metadata says of it: asked of a background session.
    assert background_cpu_limit(engine) == "none (nice and the idle policy only)"


def test_a_cpu_limit_puts_background_sessions_in_one_throttled_cgroup(settings):
    """STREAMFLOW_BACKGROUND_CPUS: every background session's server process joins one cgroup
    whose CPU time the kernel holds to the limit (it throttles a busy query), and ordinary
    sessions stay out of it."""
    procs, where = cpu_group(0.25)
    if procs is None:
        pytest.skip(f"no cgroup to limit the server's CPU with: {where}")
    engine = get_engine(dataclasses.replace(settings, background_cpus=0.25))
    assert engine.get_execution_options()[BACKGROUND_CPUS_OPTION] == 0.25
    stat = procs.parent / "cpu.stat"

    def throttled() -> int:
        fields = dict(line.split() for line in stat.read_text().splitlines())
        return int(fields["nr_throttled"])

    before = throttled()
    with background_session(engine) as conn:
        backend = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        if os.geteuid() != 0 and os.stat(f"/proc/{backend}").st_uid != os.getuid():
            pytest.skip("the test server's processes are another user's: not ours to limit")
        assert f"/{CPU_GROUP}" in Path(f"/proc/{backend}/cgroup").read_text()
        # About 0.3 s of CPU at 0.25 CPU: the kernel stops it in many of its 20 ms periods.
        conn.execute(sa.text("SELECT sum(i) FROM generate_series(1, 3000000) i"))
    assert throttled() > before
    assert background_cpu_limit(engine) == where == f"0.25 CPU (cgroup {procs.parent})"
    with get_engine(settings).connect() as conn:
        other = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        assert f"/{CPU_GROUP}" not in Path(f"/proc/{other}/cgroup").read_text()
