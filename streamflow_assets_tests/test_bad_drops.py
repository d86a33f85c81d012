"""Bad drops: a clear error naming the file and what is wrong, and no table changed."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from streamflow_assets.checks import drop_checks
from streamflow_assets.table_specs import TABLES
from streamflow_assets_tests.conftest import Warehouse, edit_csv, failure_text

FEBRUARY = "month_001"


def edit(table: str, change: Callable[[pd.DataFrame], pd.DataFrame]):
    return lambda folder: edit_csv(folder / f"{table}.csv", change)


def set_value(table: str, column: str, value: str, row: int = 3):
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[row, column] = value
        return frame

    return edit(table, change)


def edit_lines(table: str, change: Callable[[list[str]], list[str]]):
    def apply(folder: Path) -> None:
        path = folder / f"{table}.csv"
        path.write_text("".join(line + "\n" for line in change(path.read_text().splitlines())))

    return apply


def _add_column_twice(lines: list[str]) -> list[str]:
    return [lines[0] + ",churn_label"] + [line + ",False" for line in lines[1:]]


def _extra_field(lines: list[str]) -> list[str]:
    lines[3] += ",7"
    return lines


def _break_a_value(lines: list[str]) -> list[str]:
    user_id, label = lines[2].split(",")
    lines[2] = f'{user_id},"{label}\n"'
    return lines


def _replace_with_link(path: Path, target: Path) -> None:
    path.unlink()
    path.symlink_to(target)


def _replace_with_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


BAD_DROPS = {
    "missing file": (
        lambda folder: (folder / "subscriptions.csv").unlink(),
        ["subscriptions.csv is missing"],
    ),
    "a symbolic link to a device": (
        lambda folder: _replace_with_link(folder / "subscriptions.csv", Path("/dev/zero")),
        ["subscriptions.csv is not a regular file (a symbolic link to /dev/zero, a character"],
    ),
    "a directory": (
        lambda folder: _replace_with_directory(folder / "labels.csv"),
        ["labels.csv is not a regular file (a directory)"],
    ),
    "missing column": (
        edit("subscriptions", lambda f: f.drop(columns=["contract_type"])),
        ["subscriptions.csv", "columns are exactly"],
    ),
    "extra column": (
        edit("usage_agg_30d", lambda f: f.assign(favourite_genre="drama")),
        ["usage_agg_30d.csv", "columns are exactly"],
    ),
    "column twice": (
        edit_lines("labels", _add_column_twice),
        ["labels.csv", "no column appears twice"],
    ),
    "wrong type": (
        set_value("subscriptions", "months_active", "twelve"),
        ["subscriptions.csv", "months_active: values parse as INTEGER", "'twelve'"],
    ),
    "not a boolean": (
        set_value("users", "has_family", "yes"),
        ["users.csv", "has_family: values parse as BOOLEAN"],
    ),
    "impossible date": (
        set_value("users", "signup_date", "2023-02-30"),
        ["users.csv", "signup_date: values are dates written YYYY-MM-DD"],
    ),
    "duplicate user_id": (
        edit("payments_agg_90d", lambda f: pd.concat([f, f.iloc[[5]]])),
        ["payments_agg_90d.csv", "each user_id appears once"],
    ),
    "unknown user_id": (
        set_value("support_agg_90d", "user_id", "0000-ZZZZZ"),
        ["support_agg_90d.csv", "every user_id is in the month's users file", "0000-ZZZZZ"],
    ),
    "malformed user_id": (
        set_value("users", "user_id", "12345"),
        ["users.csv", "user_id looks like 7590-VHVEG", "e.g. user_id 12345\n"],
    ),
    "out of range": (
        set_value("subscriptions", "months_active", "99"),
        ["subscriptions.csv", "months_active: 0 ≤ value ≤ 72"],
    ),
    "signup after the month's as_of": (
        set_value("users", "signup_date", "2024-03-01"),
        ["users.csv", "[allowed_values]", "signup_date: not after the month's as_of (2024-02-29)"],
    ),
    "implausibly large amount": (
        set_value("subscriptions", "total_paid", "99999999999999999999"),
        ["subscriptions.csv", "total_paid: 0 ≤ value ≤ 1e+06"],
    ),
    "paid more than months subscribed allow": (
        set_value("subscriptions", "total_paid", "999999"),
        ["subscriptions.csv", "total_paid: at most (months_active + 1) x 148.75"],
    ),
    "more watch hours than the month has": (
        set_value("usage_agg_30d", "watch_hours_30d", "721"),
        ["usage_agg_30d.csv", "watch_hours_30d: 0 ≤ value ≤ 720"],
    ),
    "negative count": (
        set_value("usage_agg_30d", "skips_7d", "-1"),
        ["usage_agg_30d.csv", "skips_7d: 0 ≤ value"],
    ),
    "not an allowed value": (
        set_value("subscriptions", "contract_type", "Weekly"),
        ["subscriptions.csv", "contract_type: is one of Month-to-month, One year, Two year"],
    ),
    "missing required value": (
        set_value("users", "user_gender", ""),
        ["users.csv", "user_gender: has a value"],
    ),
    "plan_stream rule": (
        edit("subscriptions", lambda f: f.assign(plan_stream_tv="True")),
        ["subscriptions.csv", "plan_stream_tv: NULL exactly when net_service is No"],
    ),
    "empty file": (
        lambda folder: (folder / "labels.csv").write_text(""),
        ["labels.csv is empty"],
    ),
    "header only": (
        edit_lines("labels", lambda lines: lines[:1]),
        ["labels.csv", "the file has data rows"],
    ),
    "ragged row": (
        edit_lines("payments_agg_90d", _extra_field),
        ["payments_agg_90d.csv cannot be read as CSV", "extra data after last expected column"],
    ),
    "line break inside a value": (
        edit_lines("labels", _break_a_value),
        ["labels.csv", "rows staged equal the file's"],
    ),
    "not UTF-8": (
        lambda folder: (folder / "users.csv").write_bytes(
            (folder / "users.csv").read_bytes().replace(b"Female", b"F\xe9male", 1)
        ),
        ["users.csv cannot be read as CSV", "UTF8"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_DROPS), ids=list(BAD_DROPS))
def test_a_bad_drop_is_refused_with_a_clear_error_and_changes_nothing(case, new_warehouse, january):
    warehouse: Warehouse = new_warehouse(template=january)
    before = warehouse.state()
    change, expected = BAD_DROPS[case]
    change(warehouse.drops / FEBRUARY)

    result = warehouse.materialize("2024-02")

    assert not result.success
    message = failure_text(result)
    for phrase in expected:
        assert phrase in message, f"{phrase!r} not in:\n{message}"
    assert "no table was changed" in message or "nothing was published" in message
    assert warehouse.state() == before
    failed = [c for c in result.get_asset_check_evaluations() if not c.passed]
    assert failed and {c.partition for c in failed} == {"2024-02"}
    # Every check of every file has a result: those a failure stopped say so and why.
    results = {(c.asset_key.path[0], c.check_name): c for c in result.get_asset_check_evaluations()}
    for spec in TABLES:
        for check in drop_checks(spec.name, has_label=spec.label_column is not None):
            assert (spec.name, check.name) in results, f"{spec.name}.{check.name} has no result"
    not_run = [c for c in results.values() if not c.metadata["evaluated"].value]
    for check in not_run:
        assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
        assert check.description.startswith("not evaluated: "), check.description
        assert check.description.endswith(" failed first") or "users.csv" in check.description
    if case == "missing column":
        stopped = results["subscriptions", "values_parse"]
        assert stopped.description == "not evaluated: file_format failed first"


def test_a_partition_without_a_folder_names_the_folder(new_warehouse, january):
    warehouse = new_warehouse(template=january)
    before = warehouse.state()
    shutil.rmtree(warehouse.drops / FEBRUARY)
    result = warehouse.materialize("2024-02")
    assert not result.success
    assert f"partition 2024-02 has no drop folder: {warehouse.drops / FEBRUARY} does not exist" in (
        failure_text(result)
    )
    assert warehouse.state() == before


def test_bom_and_crlf_line_ends_are_accepted(new_warehouse, january):
    plain = new_warehouse(template=january)
    plain.load("2024-02")
    windows = new_warehouse(template=january)
    for path in (windows.drops / FEBRUARY).iterdir():
        text = path.read_text()
        path.write_bytes("\ufeff".encode() + text.replace("\n", "\r\n").encode())
    windows.load("2024-02")
    assert windows.state() == plain.state()


def test_absent_add_on_columns_load_as_null(new_warehouse, january):
    warehouse = new_warehouse(template=january)
    add_ons = ["add_on_security", "add_on_backup", "add_on_device_protect", "add_on_support"]
    edit_csv(warehouse.drops / FEBRUARY / "subscriptions.csv", lambda f: f.drop(columns=add_ons))
    warehouse.load("2024-02")
    nulls = warehouse.frame(
        "SELECT count(*) FILTER (WHERE add_on_security IS NULL AND add_on_support IS NULL) AS n, "
        "count(*) AS total FROM subscriptions WHERE as_of = '2024-02-29'"
    )
    assert nulls["n"][0] == nulls["total"][0] > 0


def test_warnings_do_not_block_the_drop(new_warehouse, january):
    warehouse = new_warehouse(template=january)
    edit_csv(warehouse.drops / FEBRUARY / "usage_agg_30d.csv", lambda f: f.iloc[: len(f) // 2])
    result = warehouse.materialize("2024-02", dg.AssetSelection.groups("ingestion", "snapshots"))
    assert result.success, failure_text(result)
    checks = {(c.asset_key.path[0], c.check_name): c for c in result.get_asset_check_evaluations()}
    missing = checks["usage_agg_30d", "all_users_present"]
    assert not missing.passed and missing.severity.value == "WARN"
    assert missing.metadata["unexpected rows"].value > 0
    shrunk = checks["usage_agg_30d", "row_count_stable"]
    assert not shrunk.passed
    rows, previous = shrunk.metadata["rows"].value, shrunk.metadata["previous month's rows"].value
    assert rows < 0.8 * previous
    assert shrunk.metadata["change"].value == f"{(rows - previous) / previous:+.1%}"
    assert checks["users", "row_count_stable"].passed

    # The drop is in, but February's new users have no usage values at all: no training set.
    training = warehouse.materialize("2024-02", ["feast_registry", "training_dataset"])
    assert not training.success
    assert "no_unexpected_null_feature: watch_hours_30d" in failure_text(training)


def test_the_first_month_has_no_row_count_to_compare_and_says_so(new_warehouse):
    warehouse = new_warehouse()
    result = warehouse.materialize("2024-01", dg.AssetSelection.groups("ingestion"))
    assert result.success, failure_text(result)
    checks = {(c.asset_key.path[0], c.check_name): c for c in result.get_asset_check_evaluations()}
    first = checks["users", "row_count_stable"]
    assert first.passed
    assert first.description == "no previous month to compare with: nothing to check yet"
    assert first.metadata["rows"].value > 0
    assert first.metadata["previous month's rows"].value == "no previous month"
