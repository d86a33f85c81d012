"""The embedded PostgreSQL default: started on first use, shared, recovered, stopped."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import psutil
import psycopg
import pytest

from streamflow_assets.embedded import pgdata_dir, running_server, stop_server
from streamflow_assets_tests.conftest import traversable_tmp_dir

pytestmark = pytest.mark.smoke


def streamflow(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the CLI in a new process with only STREAMFLOW_HOME set: the embedded default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFLOW_")}
    env["STREAMFLOW_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "streamflow_assets.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,  # the 3-month sample takes 70-90 s here; more on a busy machine
        cwd=cwd,
    )


def postmasters(home: Path) -> list[psutil.Process]:
    """PostgreSQL server processes whose data folder is this home's."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "ppid"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and str(pgdata_dir(home)) in cmdline:
            found.append(proc)
    return found


def url_of(home: Path) -> str:
    result = streamflow(home, "db", "url")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def home():
    folder = traversable_tmp_dir("streamflow-embedded-")
    yield folder / "home"
    stop_server(folder / "home")
    shutil.rmtree(folder, ignore_errors=True)


def test_first_use_starts_a_server_with_the_streamflow_database(home):
    assert running_server(home) is None
    url = url_of(home)
    assert url.startswith("postgresql://postgres@/streamflow?host=")
    assert running_server(home) is not None
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("streamflow",)
        # Created with the project's bulk-load settings from its first start.
        assert conn.execute("SHOW wal_level").fetchone() == ("minimal",)
        # Text sorted in byte order, whatever the environment's locale.
        assert conn.execute(
            "SELECT datcollate FROM pg_database WHERE datname = current_database()"
        ).fetchone() == ("C",)


def test_a_second_process_attaches_to_the_running_server(home):
    first = url_of(home)
    pid = running_server(home).pid
    second = url_of(home)
    assert second == first
    assert running_server(home).pid == pid
    assert len(postmasters(home)) == 1


def test_processes_starting_at_once_share_one_server(home):
    with ThreadPoolExecutor(max_workers=3) as pool:
        urls = list(pool.map(lambda _: url_of(home), range(3)))
    assert len(set(urls)) == 1
    assert len(postmasters(home)) == 1


def test_a_killed_server_is_recovered_with_its_data(home):
    url = url_of(home)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE survivor (id int)")
        conn.execute("INSERT INTO survivor VALUES (42)")
    killed = running_server(home).pid
    os.kill(killed, signal.SIGKILL)
    psutil.Process(killed).wait(timeout=10) if psutil.pid_exists(killed) else None
    deadline = time.monotonic() + 30
    while postmasters(home) and time.monotonic() < deadline:  # its backends exit on their own
        time.sleep(0.2)
    assert (pgdata_dir(home) / "postmaster.pid").exists(), "a stale pid file is left behind"

    recovered = url_of(home)
    assert running_server(home).pid != killed
    with psycopg.connect(recovered) as conn:
        assert conn.execute("SELECT id FROM survivor").fetchall() == [(42,)]


def test_stop_stops_the_server(home):
    url_of(home)
    stopped = streamflow(home, "db", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped the embedded PostgreSQL" in stopped.stdout
    assert running_server(home) is None
    assert postmasters(home) == []
    again = streamflow(home, "db", "stop")
    assert "no embedded PostgreSQL is running" in again.stdout


def test_run_on_a_fresh_folder_writes_a_sample_and_loads_every_month(home):
    work = home.parent / "project"
    work.mkdir()
    result = streamflow(home, "run", cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "holds no drops: writing a sample" in result.stdout
    assert sorted(p.name for p in (work / "data" / "seeds").iterdir()) == [
        "month_000",
        "month_001",
        "month_002",
    ]
    assert "database: postgresql://postgres@/streamflow?host=" in result.stdout
    assert "2024-01 (month_000): 7,000 users, 16 assets" in result.stdout
    assert "2024-03 (month_002):" in result.stdout
    with psycopg.connect(url_of(home)) as conn:
        months = conn.execute("SELECT DISTINCT as_of FROM labels_snapshots ORDER BY 1").fetchall()
    assert [str(m[0]) for m in months] == ["2024-01-31", "2024-02-29", "2024-03-31"]
    # Quiet: progress on stdout, and not one warning (the known third-party ones are silenced).
    assert "    2024-02 online_features " in result.stdout
    assert result.stderr == "", result.stderr

    # One run history: a monthly_graph run per month, in the instance `streamflow dev` opens.
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        runs = instance.get_runs()
        assert sorted((r.job_name, r.tags["dagster/partition"]) for r in runs) == [
            ("monthly_graph", "2024-01"),
            ("monthly_graph", "2024-02"),
            ("monthly_graph", "2024-03"),
        ]
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)

        # The sensor, switched on afterwards, runs none of the months `streamflow run` loaded...
        drops = work / "data" / "seeds"
        with pytest.MonkeyPatch.context() as env:
            env.setenv("STREAMFLOW_HOME", str(home))
            env.setenv("STREAMFLOW_DROPS_DIR", str(drops))
            first = sensor_tick(instance)
            second = sensor_tick(instance, first.cursor)
            assert not second.run_requests
            assert "month_001: 2024-02 was materialized from these files already" in (
                second.skip_reason.skip_message
            )
            # ...but does run a month whose drop was corrected since.
            labels = drops / "month_001" / "labels.csv"
            labels.write_bytes(labels.read_bytes())
            third = sensor_tick(instance, second.cursor)
            fourth = sensor_tick(instance, third.cursor)
            assert [r.partition_key for r in fourth.run_requests] == ["2024-02"]


def sensor_tick(instance: dg.DagsterInstance, cursor: str | None = None) -> dg.SensorResult:
    from streamflow_assets.defs.automation import new_drop_sensor
    from streamflow_assets.defs.resources import streamflow_settings

    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"streamflow": streamflow_settings()}
    )
    return new_drop_sensor(context)
