"""Monthly ingestion and snapshots on a real PostgreSQL: the semantics of DESIGN.md."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from streamflow_assets.db import libpq_url
from streamflow_assets.definitions import defs
from streamflow_assets.defs.automation import dead_run_sensor
from streamflow_assets.defs.dead_runs import PID_TAG, fail_dead_runs
from streamflow_assets.generator import generate_drops
from streamflow_assets.months import partitions_in_drops
from streamflow_assets.settings import DropFolderError, Settings
from streamflow_assets.table_specs import SNAPSHOT_TABLES, TABLES
from streamflow_assets.warehouse import STAGING_SCHEMA, partition_lock, staging_leftovers
from streamflow_assets_tests.conftest import failure_text, materialization, read_month

PROJECT = Path(__file__).resolve().parents[1]


# ---- the semantics ------------------------------------------------------------------------------


def test_a_month_fills_every_live_table_and_snapshot(new_warehouse):
    warehouse = new_warehouse()
    result = warehouse.materialize("2024-01")
    assert result.success, failure_text(result)
    for spec in TABLES:
        rows = len(read_month(warehouse.drops, 0, spec.name))
        assert min(read_month(warehouse.drops, 0, spec.name)["user_id"]) in (
            materialization(result, spec.name).metadata["preview"].value
        )
        live = warehouse.frame(f'SELECT as_of, count(*) AS n FROM "{spec.name}" GROUP BY as_of')
        assert live.to_dict("records") == [{"as_of": pd.Timestamp("2024-01-31").date(), "n": rows}]
        metadata = result.asset_materializations_for_node("ingest_monthly_drop")
        assert any(
            m.asset_key.path == [spec.name] and m.metadata["rows inserted"].value == rows
            for m in metadata
        )
    for spec in SNAPSHOT_TABLES:
        snap = warehouse.frame(f'SELECT count(*) AS n, min(as_of) AS a FROM "{spec.snapshot.name}"')
        assert snap["n"][0] == len(read_month(warehouse.drops, 0, spec.name))
        metadata = materialization(result, spec.snapshot.name).metadata
        assert metadata["rows"].value == snap["n"][0]
        first_user = min(read_month(warehouse.drops, 0, spec.name)["user_id"])
        assert first_user in metadata["preview"].value
    checks = result.get_asset_check_evaluations()
    blocking = {"file_format", "values_parse", "user_ids", "allowed_values"}
    warnings = {"all_users_present", "row_count_stable"}
    for spec in TABLES:
        names = {c.check_name for c in checks if c.asset_key.path == [spec.name]}
        assert names == blocking | warnings - (
            {"all_users_present"} if spec.name == "users" else set()
        ) | ({"label_rate_stable"} if spec.name == "labels" else set())
    assert all(c.passed for c in checks), [c.asset_check_key for c in checks if not c.passed]
    assert {c.partition for c in checks} == {"2024-01"}


def test_snapshot_columns_and_event_timestamp(new_warehouse):
    warehouse = new_warehouse()
    warehouse.load("2024-01")
    columns = warehouse.frame(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'subscriptions_profile_snapshots' ORDER BY ordinal_position"
    )
    assert list(columns["column_name"]) == [
        "user_id",
        "as_of",
        "event_timestamp",
        "months_active",
        "monthly_fee",
        "paperless_billing",
        "plan_stream_tv",
        "plan_stream_movies",
        "net_service",
    ]
    assert columns.set_index("column_name")["data_type"]["event_timestamp"] == (
        "timestamp with time zone"
    )
    stamps = warehouse.frame(
        "SELECT DISTINCT event_timestamp AT TIME ZONE 'UTC' AS ts FROM labels_snapshots"
    )
    assert list(stamps["ts"]) == [pd.Timestamp("2024-01-31 00:00:00")]


def test_the_ui_column_schemas_match_the_tables(new_warehouse):
    warehouse = new_warehouse()
    warehouse.load("2024-01")
    graph = defs.resolve_asset_graph()
    for name in [s.name for s in TABLES] + [s.snapshot.name for s in SNAPSHOT_TABLES]:
        shown = graph.get(dg.AssetKey(name)).metadata["dagster/column_schema"]
        actual = warehouse.frame(
            "SELECT column_name, is_nullable FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = :t",
            t=name,
        )
        assert {c.name for c in shown.columns} == set(actual["column_name"]), name
        nullable = dict(zip(actual["column_name"], actual["is_nullable"] == "YES", strict=True))
        assert {c.name: c.constraints.nullable for c in shown.columns} == nullable, name


def test_materializing_twice_changes_nothing(new_warehouse):
    warehouse = new_warehouse()
    warehouse.load("2024-01", "2024-02")
    once = warehouse.state()
    again = warehouse.materialize("2024-02")
    assert again.success
    assert warehouse.state() == once
    users = materialization(again, "users")
    assert users.metadata["rows inserted"].value == 0
    assert users.metadata["rows updated"].value == 0
    assert users.metadata["rows unchanged"].value == users.metadata["rows staged"].value


def test_a_newer_month_counts_new_and_returning_users(new_warehouse):
    warehouse = new_warehouse()
    warehouse.load("2024-01")
    result = warehouse.materialize("2024-02")
    assert result.success, failure_text(result)
    jan = set(read_month(warehouse.drops, 0, "users")["user_id"])
    feb = set(read_month(warehouse.drops, 1, "users")["user_id"])
    metadata = materialization(result, "users").metadata
    assert metadata["rows inserted"].value == len(feb - jan) > 0
    assert metadata["rows updated"].value == len(feb & jan) > 0
    assert metadata["rows unchanged"].value == metadata["rows skipped as older"].value == 0
    assert metadata["rows in live table"].value == len(feb | jan)


# A month's model trains on whichever earlier months exist when it runs, so it is not
# order-independent by design; the tables, the feature store and the training CSVs are.
NOT_THE_MODEL = dg.AssetSelection.all() - dg.AssetSelection.groups("model")


def test_any_order_of_months_gives_the_same_tables(new_warehouse):
    oldest_first = new_warehouse()
    oldest_first.load("2024-01", "2024-02", "2024-03", selection=NOT_THE_MODEL)
    newest_first = new_warehouse()
    newest_first.load("2024-03", "2024-02", "2024-01", selection=NOT_THE_MODEL)
    shuffled = new_warehouse()
    shuffled.load("2024-02", "2024-03", "2024-01", "2024-02", selection=NOT_THE_MODEL)
    assert newest_first.state() == oldest_first.state()
    assert shuffled.state() == oldest_first.state()


def test_an_old_month_rerun_keeps_newest_values_and_its_own_snapshot(new_warehouse):
    warehouse = new_warehouse()
    warehouse.load("2024-01", "2024-02")
    before = warehouse.state()
    result = warehouse.materialize("2024-01")
    assert result.success
    assert warehouse.state() == before
    users = materialization(result, "users")
    in_both = set(read_month(warehouse.drops, 0, "users")["user_id"]) & set(
        read_month(warehouse.drops, 1, "users")["user_id"]
    )
    assert users.metadata["rows skipped as older"].value == len(in_both)


def test_live_tables_hold_each_users_newest_month(new_warehouse):
    warehouse = new_warehouse()
    warehouse.load("2024-02", "2024-01")
    jan = read_month(warehouse.drops, 0, "usage_agg_30d").set_index("user_id")
    feb = read_month(warehouse.drops, 1, "usage_agg_30d").set_index("user_id")
    live = warehouse.frame("SELECT user_id, watch_hours_30d::text AS w, as_of FROM usage_agg_30d")
    live = live.set_index("user_id")
    assert set(live.index) == set(jan.index) | set(feb.index)
    for user_id, row in live.iterrows():
        month = feb if user_id in feb.index else jan
        assert row["w"] == month.loc[user_id, "watch_hours_30d"], user_id
        assert str(row["as_of"]) == ("2024-02-29" if month is feb else "2024-01-31")


def test_a_snapshot_holds_exactly_its_months_values(new_warehouse):
    warehouse = new_warehouse()
    warehouse.load("2024-01", "2024-03", "2024-02")
    for month, as_of in ((0, "2024-01-31"), (1, "2024-02-29"), (2, "2024-03-31")):
        expected = read_month(warehouse.drops, month, "subscriptions")
        snap = warehouse.frame(
            "SELECT user_id, months_active::text AS m, net_service, "
            "coalesce(plan_stream_tv::text, '') AS tv FROM subscriptions_profile_snapshots "
            "WHERE as_of = :as_of ORDER BY user_id",
            as_of=as_of,
        )
        expected = expected.sort_values("user_id").reset_index(drop=True)
        assert list(snap["user_id"]) == list(expected["user_id"])
        assert list(snap["m"]) == list(expected["months_active"])
        assert list(snap["net_service"]) == list(expected["net_service"])
        assert list(snap["tv"]) == [v.lower() for v in expected["plan_stream_tv"]]


def dagster_materialize(partition: str, env: dict[str, str], home: Path) -> subprocess.Popen:
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster",
            "asset",
            "materialize",
            "-m",
            "streamflow_assets.definitions",
            "--select",
            "*",
            "--partition",
            partition,
        ],
        env={**env, "DAGSTER_HOME": str(home)},
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a kill reaches the step processes too
    )


def test_two_runs_of_one_partition_at_once_end_like_one(new_warehouse, tmp_path):
    reference = new_warehouse()
    reference.load("2024-01")
    warehouse = new_warehouse()
    env = {
        **os.environ,
        "STREAMFLOW_DATABASE_URL": libpq_url(warehouse.url),
        "STREAMFLOW_DROPS_DIR": str(warehouse.drops),
    }
    runs = [dagster_materialize("2024-01", env, tmp_path / f"dagster{i}") for i in (1, 2)]
    for run in runs:
        output, _ = run.communicate(timeout=300)
        assert run.returncode == 0, output
    assert warehouse.state() == reference.state()


def test_a_killed_run_leaves_the_previous_state(new_warehouse, tmp_path):
    warehouse = new_warehouse()
    warehouse.load("2024-01")
    before = warehouse.state()
    big = tmp_path / "big"
    generate_drops(big, users=60_000, months=2, seed=5)
    shutil.rmtree(warehouse.drops / "month_001")
    shutil.copytree(big / "month_001", warehouse.drops / "month_001")
    env = {
        **os.environ,
        "STREAMFLOW_DATABASE_URL": libpq_url(warehouse.url),
        "STREAMFLOW_DROPS_DIR": str(warehouse.drops),
    }
    run = dagster_materialize("2024-02", env, tmp_path / "dagster")
    deadline = time.monotonic() + 120
    staging = "SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'streamflow_staging'"
    while warehouse.frame(staging)["n"][0] == 0:  # wait until the run is writing
        assert run.poll() is None and time.monotonic() < deadline, "the run ended too soon"
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert _without_staging(warehouse.state()) == _without_staging(before)

    result = warehouse.materialize("2024-02")
    assert result.success, failure_text(result)
    assert warehouse.frame(staging)["n"][0] == 0, "the next run cleared what the killed one left"


def test_a_killed_streamflow_run_is_marked_failed_by_the_next(new_warehouse, tmp_path):
    warehouse = new_warehouse()
    big = tmp_path / "big"
    generate_drops(big, users=60_000, months=1, seed=5)
    for folder in ("month_000", "month_001", "month_002"):
        shutil.rmtree(warehouse.drops / folder)
    shutil.copytree(big / "month_000", warehouse.drops / "month_000")
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    run = subprocess.Popen(
        [sys.executable, "-m", "streamflow_assets.cli", "run"],
        env=env,
        cwd=warehouse.drops.parent,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    staging = "SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'streamflow_staging'"
    deadline = time.monotonic() + 180
    while warehouse.frame(staging)["n"][0] == 0:  # wait until the run is writing
        assert run.poll() is None and time.monotonic() < deadline, "the run ended too soon"
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()

    instance = dg.DagsterInstance.from_config(str(dagster_home))
    (killed,) = instance.get_runs()
    assert killed.status == dg.DagsterRunStatus.STARTED  # what Dagster alone would show forever
    assert fail_dead_runs(instance) == [killed.run_id]
    assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
    assert fail_dead_runs(instance) == []


def test_a_run_of_any_month_clears_what_a_dead_run_of_another_left(new_warehouse):
    warehouse = new_warehouse()
    warehouse.load("2024-01", selection=dg.AssetSelection.groups("ingestion"))
    dead = "users_2024_03_typed_0123abcd"
    alive = "users_2024_02_typed_4567cdef"
    with warehouse.engine.begin() as conn:
        for name in (dead, alive):
            conn.execute(sa.text(f'CREATE TABLE "{STAGING_SCHEMA}"."{name}" AS SELECT 1 AS x'))
    # A run of 2024-02 is alive: it holds the month's ingestion lock.
    with partition_lock(warehouse.engine, "ingestion", "2024-02"):
        assert {t for t, *_ in staging_leftovers(warehouse.engine)} == {dead, alive}
        result = warehouse.materialize("2024-01", dg.AssetSelection.groups("ingestion"))
        assert result.success, failure_text(result)
        assert [t for t, *_ in staging_leftovers(warehouse.engine)] == [alive]
    result = warehouse.materialize("2024-01", dg.AssetSelection.groups("ingestion"))
    assert result.success, failure_text(result)
    assert staging_leftovers(warehouse.engine) == []


def _without_staging(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith(STAGING_SCHEMA + ".")}


def streamflow_run(warehouse) -> subprocess.CompletedProcess:
    dagster_home = warehouse.drops.parent / "dagster"
    dagster_home.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "streamflow_assets.cli", "run"],
        env={**os.environ, "DAGSTER_HOME": str(dagster_home)},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=warehouse.drops.parent,
    )


def test_drop_folders_map_to_partitions(new_warehouse):
    warehouse = new_warehouse()
    settings = Settings.from_env()
    assert list(partitions_in_drops(settings)) == ["2024-01", "2024-02", "2024-03"]
    (warehouse.drops / "month_999").mkdir()
    with pytest.raises(DropFolderError, match=r"month_999 maps to 2107-04, which has no partition"):
        partitions_in_drops(settings)
    (warehouse.drops / "month_999").rmdir()
    (warehouse.drops / "march").mkdir()
    with pytest.raises(DropFolderError, match=r"march is not a month folder"):
        partitions_in_drops(settings)


def test_run_refuses_a_folder_without_partition_and_changes_nothing(new_warehouse):
    warehouse = new_warehouse()
    (warehouse.drops / "month_999").mkdir()
    result = streamflow_run(warehouse)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "month_999 maps to 2107-04, which has no partition yet" in result.stderr
    assert warehouse.state() == {}


def test_run_reports_a_failed_month_and_exits_non_zero(new_warehouse):
    warehouse = new_warehouse()
    (warehouse.drops / "month_001" / "labels.csv").write_text("")
    result = streamflow_run(warehouse)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "2024-01 (month_000): 300 users, 16 assets" in result.stdout
    assert "2024-02 (month_001): FAILED" in result.stderr
    assert "labels.csv is empty" in result.stderr
    assert "1 month(s) failed: 2024-02" in result.stderr


def test_a_launched_run_whose_processes_die_is_marked_failed_by_the_dead_run_sensor(
    new_warehouse, tmp_path
):
    """Launched through the instance's run launcher, as the UI, the daemon and `dagster job
    launch` launch runs: a code server starts the run's worker, a process of its own. When the
    worker alone dies, the code server reports the failure; when the code server dies with it
    (a restart, the OOM killer, a container stopped), nobody does: the sensor must."""
    warehouse = new_warehouse()
    big = tmp_path / "big"
    generate_drops(big, users=60_000, months=1, seed=5)
    shutil.rmtree(warehouse.drops / "month_000")
    shutil.copytree(big / "month_000", warehouse.drops / "month_000")
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    # Launched at once (the UI's queue is drained by the daemon, which this test does not run).
    (dagster_home / "dagster.yaml").write_text(
        "run_coordinator:\n  module: dagster._core.run_coordinator\n"
        "  class: DefaultRunCoordinator\n"
    )
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    launch = [sys.executable, "-m", "dagster", "job", "launch",
              "-m", "streamflow_assets.definitions", "-j", "monthly_graph",
              "--tags", '{"dagster/partition": "2024-01"}']  # fmt: skip
    launcher = subprocess.Popen(
        launch, env=env, cwd=PROJECT, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    deadline = time.monotonic() + 180
    while True:  # until the worker has named itself on the run
        runs = instance.get_runs()
        if runs and PID_TAG in runs[0].tags:
            (run,) = runs
            break
        assert time.monotonic() < deadline, "no run started"
        time.sleep(0.1)
    worker = int(run.tags[PID_TAG])
    assert run.status == dg.DagsterRunStatus.STARTED
    assert worker != os.getpid()  # a process of its own
    assert dead_run_sensor(dg.build_sensor_context(instance=instance)).skip_message == (
        "no run whose process died"
    )  # a live worker is left alone

    os.killpg(launcher.pid, signal.SIGKILL)  # the code server, and the worker with it
    launcher.wait()
    deadline = time.monotonic() + 30
    while _pid_exists(worker):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    result = dead_run_sensor(dg.build_sensor_context(instance=instance))
    assert result.skip_message == f"marked failed: {run.run_id}"
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
