"""The sample-drop generator: deterministic, in the drop format of the table specs, realistic."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from streamflow_assets.generator import TARGET_CHURN_RATE, generate_drops
from streamflow_assets.table_specs import TABLES, TableSpec

USERS = 20_000


def read_drop_file(spec: TableSpec, path: Path) -> pd.DataFrame:
    """A drop file as raw strings ('' for an empty field), checked against the spec's header."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert tuple(frame.columns) == spec.column_names, path
    return frame


def read_month(folder: Path) -> dict[str, pd.DataFrame]:
    return {spec.name: read_drop_file(spec, folder / spec.file_name) for spec in TABLES}


@pytest.fixture(scope="module")
def drops(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("drops")
    generate_drops(out, users=USERS, months=3, seed=11)
    return out


@pytest.fixture(scope="module")
def dynamic_drops(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dynamic")
    generate_drops(out, users=USERS, months=2, seed=11, dynamic=True)
    return out


@pytest.fixture(scope="module")
def month0(drops) -> dict[str, pd.DataFrame]:
    return read_month(drops / "month_000")


@pytest.fixture(scope="module")
def features0(month0) -> pd.DataFrame:
    """Month 0's tables parsed and joined on user_id."""
    joined = None
    for spec in TABLES:
        frame = month0[spec.name].replace("", np.nan)
        for col in spec.columns:
            if col.sql_type in ("INTEGER", "NUMERIC"):
                frame[col.name] = pd.to_numeric(frame[col.name])
            elif col.sql_type == "BOOLEAN":
                frame[col.name] = frame[col.name].map({"True": True, "False": False})
        joined = frame if joined is None else joined.merge(frame, on="user_id")
    return joined


def test_same_seed_gives_byte_identical_files(tmp_path):
    generate_drops(tmp_path / "a", users=500, months=2, seed=3, dynamic=True)
    generate_drops(tmp_path / "b", users=500, months=2, seed=3, dynamic=True)
    generate_drops(tmp_path / "c", users=500, months=2, seed=4, dynamic=True)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.csv"))
    assert len(files) == 12
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert (tmp_path / "a" / files[0]).read_bytes() != (tmp_path / "c" / files[0]).read_bytes()


def test_folders_and_files_follow_the_drop_format(drops):
    assert sorted(p.name for p in drops.iterdir()) == ["month_000", "month_001", "month_002"]
    for folder in drops.iterdir():
        assert sorted(p.name for p in folder.iterdir()) == sorted(s.file_name for s in TABLES)
        for spec in TABLES:
            raw = (folder / spec.file_name).read_bytes()
            assert raw.startswith((",".join(spec.column_names) + "\n").encode())
            assert b"\r" not in raw and b'"' not in raw


@pytest.mark.parametrize("spec", TABLES, ids=lambda s: s.name)
def test_every_value_conforms_to_the_table_spec(month0, spec):
    frame = month0[spec.name]
    assert len(frame) == USERS
    assert frame["user_id"].is_unique
    assert set(frame["user_id"]) == set(month0["users"]["user_id"])
    for col in spec.columns:
        values = frame[col.name]
        present = values[values != ""]
        if not col.nullable:
            assert len(present) == len(values), f"{spec.name}.{col.name} has blanks"
        if col.pattern:
            assert present.str.fullmatch(col.pattern).all(), col.name
        if col.allowed:
            assert set(present) <= set(col.allowed), col.name
        if col.sql_type == "BOOLEAN":
            assert set(present) <= {"True", "False"}, col.name
        if col.sql_type == "DATE":
            assert present.str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
            pd.to_datetime(present, format="%Y-%m-%d")
        if col.sql_type == "INTEGER":
            assert present.str.fullmatch(r"-?\d+").all(), col.name
        if col.sql_type in ("INTEGER", "NUMERIC"):
            numbers = pd.to_numeric(present)
            if col.min_value is not None:
                assert numbers.min() >= col.min_value, col.name
            if col.max_value is not None:
                assert numbers.max() <= col.max_value, col.name
        if col.null_exactly_when:
            other, value = col.null_exactly_when
            assert ((values == "") == (frame[other] == value)).all(), col.name


def test_category_mixes_match_the_real_data(features0):
    contract = features0["contract_type"].value_counts(normalize=True)
    assert contract["Month-to-month"] == pytest.approx(0.55, abs=0.015)
    assert contract["Two year"] == pytest.approx(0.24, abs=0.015)
    assert contract["One year"] == pytest.approx(0.21, abs=0.015)
    net = features0["net_service"].value_counts(normalize=True)
    assert net["Fiber optic"] == pytest.approx(0.44, abs=0.015)
    assert net["DSL"] == pytest.approx(0.34, abs=0.015)
    assert net["No"] == pytest.approx(0.22, abs=0.015)
    assert features0["user_is_senior"].mean() == pytest.approx(0.16, abs=0.01)


def test_total_paid_is_about_months_active_times_fee(features0):
    paying = features0[features0["months_active"] > 0]
    ratio = paying["total_paid"] / (paying["months_active"] * paying["monthly_fee"])
    assert ratio.between(0.9, 1.1).all()
    assert features0.loc[features0["months_active"] == 0, "total_paid"].isna().all()


def test_churn_is_about_a_quarter_and_follows_the_known_drivers(features0):
    churn = features0["churn_label"]
    assert churn.mean() == pytest.approx(0.25, abs=0.02)
    by_contract = features0.groupby("contract_type")["churn_label"].mean()
    assert by_contract["Month-to-month"] > 2 * by_contract["One year"] > 2 * by_contract["Two year"]
    by_net = features0.groupby("net_service")["churn_label"].mean()
    assert by_net["Fiber optic"] > by_net["DSL"] + 0.05
    assert (
        churn[features0["failed_payments_90d"] > 0].mean()
        > churn[features0["failed_payments_90d"] == 0].mean() + 0.08
    )
    assert (
        churn[features0["support_tickets_90d"] > 0].mean()
        > churn[features0["support_tickets_90d"] == 0].mean() + 0.05
    )


def test_falling_watch_hours_predict_churn(drops):
    """Watch hours that fell from month 1 to month 2 go with more churn in month 2."""
    before = read_drop_file(TABLES[2], drops / "month_001" / "usage_agg_30d.csv")
    after = read_drop_file(TABLES[2], drops / "month_002" / "usage_agg_30d.csv")
    labels = read_drop_file(TABLES[-1], drops / "month_002" / "labels.csv")
    joined = before.merge(after, on="user_id", suffixes=("_1", "_2")).merge(labels, on="user_id")
    fell = pd.to_numeric(joined["watch_hours_30d_2"]) < 0.8 * pd.to_numeric(
        joined["watch_hours_30d_1"]
    )
    churned = joined["churn_label"] == "True"
    assert churned[fell].mean() > churned[~fell].mean() + 0.05


def test_month_to_month_changes(drops, month0):
    month1 = read_month(drops / "month_001")
    subs = month0["subscriptions"].merge(month1["subscriptions"], on="user_id", suffixes=("0", "1"))
    active0, active1 = (pd.to_numeric(subs[c]) for c in ("months_active0", "months_active1"))
    assert (active1 == np.minimum(active0 + 1, 72)).all()
    paid0 = pd.to_numeric(subs["total_paid0"].replace("", "0"))
    assert (pd.to_numeric(subs["total_paid1"]) > paid0).all()
    assert month0["users"].equals(month1["users"])

    def changed_share(table: str) -> float:
        a = month0[table].set_index("user_id")
        b = month1[table].set_index("user_id").loc[a.index]
        return float((a != b).any(axis=1).mean())

    assert changed_share("usage_agg_30d") > 0.99
    for table in ("payments_agg_90d", "support_agg_90d", "labels"):
        assert 0.02 < changed_share(table) < 0.5, table


def test_dynamic_drops_lose_churned_users_and_gain_signups(dynamic_drops):
    labels0 = read_drop_file(TABLES[-1], dynamic_drops / "month_000" / "labels.csv")
    users1 = read_drop_file(TABLES[0], dynamic_drops / "month_001" / "users.csv")
    subs1 = read_drop_file(TABLES[1], dynamic_drops / "month_001" / "subscriptions.csv")
    churned = set(labels0.loc[labels0["churn_label"] == "True", "user_id"])
    stayed = set(labels0["user_id"]) - churned
    assert churned and not churned & set(users1["user_id"])
    assert stayed <= set(users1["user_id"])
    newcomers = users1[~users1["user_id"].isin(labels0["user_id"])]
    assert 0.8 * len(churned) < len(newcomers) < 1.2 * len(churned)
    signup = pd.to_datetime(newcomers["signup_date"])
    assert signup.between("2024-02-01", "2024-02-29").all()
    new_subs = subs1[subs1["user_id"].isin(newcomers["user_id"])]
    assert (new_subs["months_active"] == "0").all() and (new_subs["total_paid"] == "").all()


def test_first_month_sets_the_dates(tmp_path):
    generate_drops(tmp_path, users=200, months=1, seed=1, first_month=date(2025, 6, 1))
    users = read_drop_file(TABLES[0], tmp_path / "month_000" / "users.csv")
    assert pd.to_datetime(users["signup_date"]).max() <= pd.Timestamp("2025-06-30")


def test_cli_writes_drops_and_refuses_to_overwrite(tmp_path):
    def generate(seed: int) -> subprocess.CompletedProcess:
        cmd = [
            sys.executable,
            "-m",
            "streamflow_assets.cli",
            "generate",
            "--users",
            "300",
            "--months",
            "2",
            "--seed",
            str(seed),
            "--out",
            str(tmp_path),
        ]
        return subprocess.run(cmd, capture_output=True, text=True)

    first = generate(seed=5)
    assert first.returncode == 0, first.stderr
    assert re.search(r"wrote 2 monthly drops of ~300 users", first.stdout)
    before = (tmp_path / "month_000" / "users.csv").read_bytes()
    again = generate(seed=7)
    assert again.returncode == 1
    assert "pass --overwrite" in again.stderr
    assert (tmp_path / "month_000" / "users.csv").read_bytes() == before


def test_dynamic_drops_keep_the_churn_rate_near_its_target_every_month(tmp_path):
    # Last month's churners leave each month; the rate must not fall with them (it once went
    # 25% -> 13% -> 9% over three months).
    folders = generate_drops(tmp_path, users=USERS, months=6, seed=5, dynamic=True)
    rates = [
        read_drop_file(TABLES[-1], folder / "labels.csv")["churn_label"].eq("True").mean()
        for folder in folders
    ]
    assert all(rate == pytest.approx(TARGET_CHURN_RATE, abs=0.02) for rate in rates), rates


def test_two_million_user_ids_are_one_array_of_well_formed_ids():
    # pa.array() of numpy bytes turns chunked from about 1.8M values on; the writer needs one array.
    from streamflow_assets.generator import _user_ids
    from streamflow_assets.table_specs import USER_ID_PATTERN

    ids = _user_ids(np.arange(2_000_000, dtype=np.int64) * 7919)
    assert isinstance(ids, pa.StringArray) and len(ids) == 2_000_000
    assert ids[0].as_py() == "0000-AAAAA" and ids[1].as_py() == "0000-AALSP"
    sample = ids.take(pa.array(np.arange(0, 2_000_000, 99_991))).to_pylist()
    assert all(re.fullmatch(USER_ID_PATTERN, i) for i in sample)
