"""The monthly schedule and the new-drop sensor on real folders, through Dagster's test contexts."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from streamflow_assets.defs.automation import (
    AUTOMATION_VAR,
    default_status,
    monthly_schedule,
    new_drop_sensor,
)
from streamflow_assets.defs.resources import streamflow_settings
from streamflow_assets.table_specs import DROP_FILES

pytestmark = pytest.mark.smoke


@pytest.fixture
def drops(tmp_path: Path, seed_drops: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "drops"
    folder.mkdir()
    monkeypatch.setenv("STREAMFLOW_DROPS_DIR", str(folder))
    monkeypatch.setenv("STREAMFLOW_FIRST_MONTH", "2024-01")
    return folder


def copy_month(seed_drops: Path, drops: Path, month: int, files=DROP_FILES) -> Path:
    target = drops / f"month_{month:03d}"
    target.mkdir(exist_ok=True)
    for name in files:
        shutil.copy(seed_drops / f"month_{month:03d}" / name, target / name)
    return target


def scheduled(when: str) -> dg.ScheduleEvaluationContext:
    return dg.build_schedule_context(
        scheduled_execution_time=datetime.fromisoformat(when).replace(tzinfo=UTC),
        resources={"streamflow": streamflow_settings()},
    )


# ---- schedule ---------------------------------------------------------------------------------


def test_schedule_asks_for_the_month_that_just_ended(drops, seed_drops):
    copy_month(seed_drops, drops, 1)
    request = monthly_schedule(scheduled("2024-03-01T06:00:00"))
    assert isinstance(request, dg.RunRequest)
    assert request.partition_key == "2024-02"
    assert request.run_key.startswith("2024-02:")


def test_schedule_skips_naming_the_missing_folder(drops):
    skip = monthly_schedule(scheduled("2024-03-01T06:00:00"))
    assert isinstance(skip, dg.SkipReason)
    assert "no drop for 2024-02" in skip.skip_message
    assert str(drops / "month_001") in skip.skip_message


def test_schedule_skips_naming_the_missing_files(drops, seed_drops):
    copy_month(seed_drops, drops, 1, files=DROP_FILES[:4])
    skip = monthly_schedule(scheduled("2024-03-01T06:00:00"))
    assert isinstance(skip, dg.SkipReason)
    assert "support_agg_90d.csv, labels.csv" in skip.skip_message


def test_schedule_skips_before_the_first_month(drops):
    skip = monthly_schedule(scheduled("2024-01-01T06:00:00"))
    assert isinstance(skip, dg.SkipReason)
    assert "before STREAMFLOW_FIRST_MONTH" in skip.skip_message


# ---- sensor -----------------------------------------------------------------------------------


def tick(cursor: str | None = None) -> dg.SensorResult:
    """A tick on an instance that has materialized nothing (no month was loaded before)."""
    with dg.DagsterInstance.ephemeral() as instance:
        return new_drop_sensor(
            dg.build_sensor_context(
                instance=instance, cursor=cursor, resources={"streamflow": streamflow_settings()}
            )
        )


def test_a_new_folder_runs_once_after_a_tick_without_change(drops, seed_drops):
    copy_month(seed_drops, drops, 0)
    first = tick()
    assert not first.run_requests
    assert "month_000: complete; runs if unchanged" in first.skip_reason.skip_message
    second = tick(first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["2024-01"]
    assert second.run_requests[0].run_key.startswith("month_000:")
    third = tick(second.cursor)
    assert not third.run_requests


def test_a_half_written_folder_is_reported_not_run(drops, seed_drops):
    folder = copy_month(seed_drops, drops, 0, files=DROP_FILES[:3])
    first = tick()
    assert not first.run_requests
    assert "month_000: waiting for payments_agg_90d.csv" in first.skip_reason.skip_message
    # The last file arrives but is still being written at the next tick.
    labels = (seed_drops / "month_000" / "labels.csv").read_bytes()
    for name in DROP_FILES[3:]:
        shutil.copy(seed_drops / "month_000" / name, folder / name)
    (folder / "labels.csv").write_bytes(labels[: len(labels) // 2])
    second = tick(first.cursor)
    assert not second.run_requests
    (folder / "labels.csv").write_bytes(labels)
    third = tick(second.cursor)
    assert not third.run_requests  # changed since the previous tick
    fourth = tick(third.cursor)
    assert [r.partition_key for r in fourth.run_requests] == ["2024-01"]


def test_a_corrected_drop_runs_again_with_a_new_run_key(drops, seed_drops):
    folder = copy_month(seed_drops, drops, 0)
    ran = tick(tick().cursor)
    (first_run,) = ran.run_requests
    # A corrected file rewritten with the same size: only its time tells.
    stat = (folder / "labels.csv").stat()
    os.utime(folder / "labels.csv", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    noticed = tick(ran.cursor)
    assert not noticed.run_requests
    again = tick(noticed.cursor)
    (second_run,) = again.run_requests
    assert second_run.partition_key == "2024-01"
    assert second_run.run_key != first_run.run_key


def test_unknown_folders_are_reported_not_run(drops, seed_drops):
    (drops / "misc").mkdir()
    (drops / "month_999").mkdir()
    result = tick(tick().cursor)
    assert not result.run_requests
    message = result.skip_reason.skip_message
    assert "misc: not a month folder" in message
    assert "month_999: maps to 2107-04, which has no partition yet" in message


def test_the_cursor_survives_a_restart(drops, seed_drops):
    """A new sensor process gets the stored cursor: months that ran do not run again, a folder
    seen once runs at the next tick."""
    copy_month(seed_drops, drops, 0)
    ran = tick(tick().cursor)
    copy_month(seed_drops, drops, 1)
    seen = tick(ran.cursor)
    stored = json.loads(seen.cursor)
    assert set(stored["requested"]) == {"month_000"}
    assert set(stored["seen"]) == {"month_000", "month_001"}
    after_restart = tick(seen.cursor)
    assert [r.partition_key for r in after_restart.run_requests] == ["2024-02"]


def test_automation_starts_stopped_unless_switched_on(monkeypatch):
    monkeypatch.delenv(AUTOMATION_VAR, raising=False)
    assert default_status() == dg.DefaultSensorStatus.STOPPED
    monkeypatch.setenv(AUTOMATION_VAR, "on")
    assert default_status() == dg.DefaultSensorStatus.RUNNING
