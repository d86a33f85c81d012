"""Checks on what the graph produces: each fails on a tampered case and passes on a clean one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
import sqlalchemy as sa

from streamflow_assets.defs.feature_store import deadline_cron, online_freshness_checks
from streamflow_assets.defs.partitions import monthly_partitions
from streamflow_assets.feature_store.registry import verify_registry
from streamflow_assets.feature_store.repo import feature_repo, feature_store
from streamflow_assets.feature_store.verify import every_user_online, online_matches_offline
from streamflow_assets.model import verify_scores
from streamflow_assets.monitoring import (
    SAMPLE_ROWS,
    feature_drift,
    keep_sample,
    kept_sample,
    sample,
)
from streamflow_assets.settings import Settings, SettingsError
from streamflow_assets.snapshots import verify_snapshot
from streamflow_assets.table_specs import LABELS, SNAPSHOT_TABLES, USAGE_AGG_30D
from streamflow_assets_tests.conftest import SEED_USERS, edit_csv, failure_text

SNAPSHOTS = dg.AssetSelection.groups("snapshots")


def evaluations(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], object]:
    return {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in result.get_asset_check_evaluations()
    }


def test_every_snapshot_matches_its_validated_drop(new_warehouse, january):
    warehouse = new_warehouse(template=january)
    result = warehouse.materialize("2024-01", SNAPSHOTS)
    assert result.success, failure_text(result)
    checks = evaluations(result)
    assert {asset for asset, name in checks if name == "matches_validated_drop"} == {
        spec.snapshot.name for spec in SNAPSHOT_TABLES
    }
    assert all(e.passed for e in checks.values())


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        ("DELETE FROM {t} WHERE user_id = (SELECT min(user_id) FROM {t})", "rows, the drop has"),
        (
            "UPDATE {t} SET watch_hours_30d = watch_hours_30d + 1 "
            "WHERE user_id = (SELECT min(user_id) FROM {t})",
            "the same number of rows with different values",
        ),
        (
            "UPDATE {t} SET event_timestamp = event_timestamp + interval '1 hour' "
            "WHERE user_id = (SELECT min(user_id) FROM {t})",
            "1 rows with another as_of or event_timestamp",
        ),
    ],
    ids=["a row deleted", "a value altered", "an event time moved"],
)
def test_a_tampered_snapshot_fails_its_check(new_warehouse, january, tamper, expected):
    warehouse = new_warehouse(template=january)
    assert verify_snapshot(warehouse.engine, USAGE_AGG_30D, "2024-01").passed
    table = '"snapshot_months"."usage_agg_30d_snapshots_2024_01"'
    with warehouse.engine.begin() as conn:
        conn.execute(sa.text(tamper.format(t=table)))
    outcome = verify_snapshot(warehouse.engine, USAGE_AGG_30D, "2024-01")
    assert not outcome.passed
    assert expected in outcome.description


def test_a_month_where_everyone_churned_is_loaded_with_a_warning(new_warehouse, january):
    warehouse = new_warehouse(template=january)
    edit_csv(warehouse.drops / "month_001" / "labels.csv", lambda f: f.assign(churn_label="True"))
    result = warehouse.materialize("2024-02", dg.AssetSelection.groups("ingestion"))
    assert result.success, failure_text(result)
    check = evaluations(result)[("labels", "label_rate_stable")]
    assert not check.passed
    metadata = check.metadata
    assert metadata["churn rate"].value == 1.0
    assert 0 < metadata["previous month's rate"].value < 1


def test_a_stable_label_rate_passes_and_says_so(new_warehouse, january):
    warehouse = new_warehouse(template=january)
    result = warehouse.materialize("2024-02", dg.AssetSelection.groups("ingestion"))
    assert result.success, failure_text(result)
    check = evaluations(result)[("labels", "label_rate_stable")]
    assert check.passed
    assert "churn rate" in check.metadata and "previous month's rate" in check.metadata


def test_scores_are_checked_and_a_tampered_month_fails(new_warehouse):
    warehouse = new_warehouse()
    result = warehouse.materialize("2024-01")
    assert result.success, failure_text(result)
    check = evaluations(result)[("churn_scores", "one_score_per_user")]
    assert check.passed, check.description
    version = warehouse.frame("SELECT DISTINCT model_version FROM churn_scores")
    label = version["model_version"].item()
    assert verify_scores(warehouse.engine, "2024-01", label).passed
    with warehouse.engine.begin() as conn:
        conn.execute(sa.text("UPDATE churn_scores SET score = 1.5 WHERE user_id = "
                             "(SELECT min(user_id) FROM churn_scores)"))  # fmt: skip
    outside = verify_scores(warehouse.engine, "2024-01", label)
    assert not outside.passed and "1 scores outside [0, 1]" in outside.description
    with warehouse.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM churn_scores WHERE score > 1"))
    missing = verify_scores(warehouse.engine, "2024-01", label)
    users = warehouse.frame(
        f"SELECT count(*) AS n FROM {LABELS.snapshot.name} WHERE as_of = '2024-01-31'"
    )["n"].item()
    assert not missing.passed
    assert f"{users - 1:,} scores for {users - 1:,} users; the month has {users:,}" in (
        missing.description
    )


def test_the_registry_matches_the_repository_until_a_view_is_edited_without_apply(
    new_warehouse, january, tmp_path, monkeypatch
):
    warehouse = new_warehouse(template=january)
    result = warehouse.materialize("2024-01", "feast_registry")
    assert result.success, failure_text(result)
    check = evaluations(result)[("feast_registry", "registry_matches_repo")]
    assert check.passed, check.description

    edited = tmp_path / "feature_repo"
    shutil.copytree(feature_repo(Settings.from_env()), edited)
    views = edited / "feature_views.py"
    views.write_text(views.read_text().replace("timedelta(days=31)", "timedelta(days=30)"))
    monkeypatch.setenv("STREAMFLOW_FEATURE_REPO", str(edited))
    settings = Settings.from_env()
    outcome = verify_registry(warehouse.engine, feature_store(settings), feature_repo(settings))
    assert not outcome.passed
    assert "feature view usage_agg_30d_fv (ttl): update" in outcome.description


def test_a_source_column_that_is_gone_fails_the_registry_check(new_warehouse, january):
    warehouse = new_warehouse(template=january)
    warehouse.load("2024-01", selection="feast_registry")
    with warehouse.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE usage_agg_30d_snapshots DROP COLUMN skips_7d"))
    settings = Settings.from_env()
    outcome = verify_registry(warehouse.engine, feature_store(settings), feature_repo(settings))
    assert not outcome.passed
    assert "usage_agg_30d_fv: usage_agg_30d_snapshots has no column skips_7d" in (
        outcome.description
    )


ONLINE_PROFILE = "feast_online.streamflow_subs_profile_fv"


@pytest.fixture
def online_january(new_warehouse, january):
    warehouse = new_warehouse(template=january)
    result = warehouse.materialize("2024-01", dg.AssetSelection.groups("feature_store"))
    assert result.success, failure_text(result)
    checks = evaluations(result)
    for name in ("every_user_online", "online_matches_offline"):
        assert checks[("online_features", name)].passed, checks[("online_features", name)]
    return warehouse


def _online_checks(warehouse):
    store = feature_store(Settings.from_env())
    return (
        every_user_online(warehouse.engine, store, "2024-01"),
        online_matches_offline(warehouse.engine, store, "2024-01", sample_size=SEED_USERS),
    )


def test_a_deleted_online_row_fails_both_online_checks(online_january):
    with online_january.engine.begin() as conn:
        conn.execute(
            sa.text(f"DELETE FROM {ONLINE_PROFILE} WHERE entity_key = (SELECT entity_key "
                    f"FROM {ONLINE_PROFILE} ORDER BY entity_key LIMIT 1)")
        )  # fmt: skip
    coverage, skew = _online_checks(online_january)
    assert not coverage.passed
    assert "subs_profile_fv: 1 users of the month not online" in coverage.description
    assert not skew.passed
    assert "values differ, in 1 users" in skew.description


def test_an_altered_online_value_fails_online_matches_offline(online_january):
    with online_january.engine.begin() as conn:
        # monthly_fee + 1, re-encoded the way Feast stores a double.
        conn.execute(
            sa.text(
                f"UPDATE {ONLINE_PROFILE} SET value = '\\x09'::bytea || "
                "substr(float8send(value_text::float8 + 1), 8, 1) || "
                "substr(float8send(value_text::float8 + 1), 7, 1) || "
                "substr(float8send(value_text::float8 + 1), 6, 1) || "
                "substr(float8send(value_text::float8 + 1), 5, 1) || "
                "substr(float8send(value_text::float8 + 1), 4, 1) || "
                "substr(float8send(value_text::float8 + 1), 3, 1) || "
                "substr(float8send(value_text::float8 + 1), 2, 1) || "
                "substr(float8send(value_text::float8 + 1), 1, 1) "
                "WHERE feature_name = 'monthly_fee' AND entity_key = "
                f"(SELECT entity_key FROM {ONLINE_PROFILE} ORDER BY entity_key LIMIT 1)"
            )
        )
    coverage, skew = _online_checks(online_january)
    assert coverage.passed, coverage.description
    assert not skew.passed
    differences = skew.metadata["differences"]
    assert "monthly_fee" in str(differences)
    # The on-demand feature derived from it differs too (unless nothing was watched).
    assert skew.description.startswith(("1 values differ", "2 values differ"))


def test_an_online_user_no_month_had_fails_every_user_online(online_january):
    with online_january.engine.begin() as conn:
        conn.execute(
            sa.text(
                f"INSERT INTO {ONLINE_PROFILE} (entity_key, feature_name, value, value_text, "
                "event_ts, created_ts) SELECT overlay(entity_key placing "
                "convert_to('9999-ZZZZZ', 'UTF8') from length(entity_key) - 9), feature_name, "
                f"value, value_text, event_ts, created_ts FROM {ONLINE_PROFILE} WHERE "
                f"entity_key = (SELECT entity_key FROM {ONLINE_PROFILE} ORDER BY 1 LIMIT 1)"
            )
        )
    coverage, _ = _online_checks(online_january)
    assert not coverage.passed
    assert "subs_profile_fv: 1 online users no month ever had" in coverage.description


def test_a_user_swapped_for_one_no_month_had_fails_every_user_online(online_january):
    """As many users online as the month has, but not the same ones: the set digests differ,
    and the join names what is wrong."""
    coverage, _ = _online_checks(online_january)
    assert coverage.passed
    assert "set digests" in coverage.metadata["by feature view"]
    with online_january.engine.begin() as conn:
        conn.execute(
            sa.text(
                f"UPDATE {ONLINE_PROFILE} SET entity_key = overlay(entity_key placing "
                "convert_to('9999-ZZZZZ', 'UTF8') from length(entity_key) - 9) WHERE "
                f"entity_key = (SELECT entity_key FROM {ONLINE_PROFILE} ORDER BY 1 LIMIT 1)"
            )
        )
    coverage, _ = _online_checks(online_january)
    assert not coverage.passed
    assert "subs_profile_fv: 1 users of the month not online" in coverage.description
    assert "subs_profile_fv: 1 online users no month ever had" in coverage.description
    assert "join" in coverage.metadata["by feature view"]


def test_feature_drift_names_the_feature_that_moved_and_the_month_completes(new_warehouse):
    warehouse = new_warehouse()
    edit_csv(
        warehouse.drops / "month_001" / "usage_agg_30d.csv",
        lambda f: f.assign(watch_hours_30d=f.watch_hours_30d.astype(float) * 3),
    )
    first = warehouse.materialize("2024-01")
    assert first.success, failure_text(first)
    check = evaluations(first)[("training_dataset", "feature_drift")]
    assert check.passed and "no previous month (2023-12) to compare with" in check.description

    second = warehouse.materialize("2024-02")
    assert second.success, failure_text(second)  # drift is reported, not blocking
    check = evaluations(second)[("training_dataset", "feature_drift")]
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert "watch_hours_30d" in check.description
    assert check.metadata["drift share"].value > 0
    report = Path(check.metadata["report"].value)
    assert report == warehouse.output / "drift" / "2024-02.html"
    assert "watch_hours_30d" in report.read_text()
    assert (warehouse.output / "drift" / "2024-01.sample.arrow").exists()


def test_the_kept_sample_is_the_months_sample_until_the_month_is_written_again(tmp_path):
    rows = SAMPLE_ROWS + 5_000
    table = pa.table(
        {"user_id": [f"{i:06d}" for i in range(rows)], "x": [float(i) for i in range(rows)]}
    )
    csv = tmp_path / "training" / "2024-01.csv"
    csv.parent.mkdir()
    csv.write_text("written first")
    keep_sample(table, "2024-01", tmp_path)

    kept = kept_sample(tmp_path, "2024-01", written_after=csv)
    assert kept is not None and kept.num_rows == SAMPLE_ROWS
    assert kept.equals(sample(table, "2024-01"))
    assert sample(kept, "2024-01").equals(kept)  # the drift check samples it to itself

    later = csv.stat().st_mtime_ns + 1_000_000_000
    os.utime(csv, ns=(later, later))  # the month's CSV written again, its sample not (a kill)
    assert kept_sample(tmp_path, "2024-01", written_after=csv) is None


def test_no_drift_between_a_month_and_itself(tmp_path):
    table = pa.table(
        {
            "user_id": [f"{i:04d}-AAAAA" for i in range(500)],
            "watch_hours_30d": [float(i % 97) for i in range(500)],
            "net_service": [("DSL", "Fiber optic", "No")[i % 3] for i in range(500)],
        }
    )
    outcome = feature_drift(table, table, "2024-02", "2024-01", tmp_path)
    assert outcome.passed, outcome.description
    assert outcome.metadata["drift share"] == 0
    assert "no feature drifted since 2024-01 (2 compared)" in outcome.description


IMPORT_AHEAD = """
import sys, threading
from pathlib import Path
import pyarrow as pa
from streamflow_assets.adapters import evidently
from streamflow_assets.monitoring import feature_drift

assert "evidently" not in sys.modules
evidently.import_ahead()
(thread,) = [t for t in threading.enumerate() if t.name == "import evidently"]
thread.join()
assert "evidently.metrics" in sys.modules  # imported by the thread
table = pa.table({"user_id": ["0001-AAAAA", "0002-AAAAA"] * 50, "x": [1.0, 2.0] * 50})
outcome = feature_drift(table, table, "2024-02", "2024-01", Path(sys.argv[1]))
print(outcome.passed, outcome.description)
"""


def test_evidently_imported_ahead_in_a_thread_serves_the_drift_test_without_warnings(tmp_path):
    """The training CSV starts Evidently's import in a thread (it takes seconds); the drift test
    then uses it, and the import's warnings about Evidently's own dependencies stay silenced
    though no `catch_warnings` can guard a thread (here every warning is shown: -W always)."""
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", IMPORT_AHEAD, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("True no feature drifted since 2024-01"), done.stdout
    noise = [line for line in done.stderr.splitlines() if "Warning" in line]
    assert not [line for line in noise if "evidently" in line or "litestar" in line], noise


def test_the_online_deadline_check_is_red_until_the_month_that_ended_is_online():
    instance = dg.DagsterInstance.ephemeral()
    online = dg.AssetSpec("online_features", partitions_def=monthly_partitions)

    def evaluate():
        result = dg.materialize(
            [online, *online_freshness_checks],
            instance=instance,
            selection=dg.AssetSelection.all_asset_checks(),
        )
        (check,) = result.get_asset_check_evaluations()
        return check

    late = evaluate()
    assert not late.passed
    assert late.severity == dg.AssetCheckSeverity.WARN
    assert late.metadata["dagster/freshness_params"].value["deadline_cron"] == "0 0 5 * *"
    expected = late.description.rsplit("partition ", 1)[1].split(" ")[0]
    instance.report_runless_asset_event(
        dg.AssetMaterialization("online_features", partition=expected)
    )
    assert evaluate().passed


def test_the_deadline_day_is_a_setting():
    assert deadline_cron(Settings.from_env({"STREAMFLOW_ONLINE_DEADLINE_DAY": "12"})) == (
        "0 0 12 * *"
    )
    with pytest.raises(SettingsError, match="STREAMFLOW_ONLINE_DEADLINE_DAY must be a day"):
        Settings.from_env({"STREAMFLOW_ONLINE_DEADLINE_DAY": "31"})
