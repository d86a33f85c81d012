"""The Feast part of the graph on a real PostgreSQL with the real Feast: registry, online store,
training CSVs, and the encoders of the fast online writer checked against Feast's own."""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.feather as feather
import pytest
import sqlalchemy as sa
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import extract_text_and_num
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType

from streamflow_assets import monitoring
from streamflow_assets.adapters.feast import redis_client
from streamflow_assets.db import libpq_url
from streamflow_assets.feature_store import training
from streamflow_assets.feature_store.online import (
    entity_key_sql,
    online_table,
    published_months,
    value_sql,
)
from streamflow_assets.feature_store.repo import FEATURE_SERVICE, feature_repo, feature_store
from streamflow_assets.feature_store.training import training_table
from streamflow_assets.feature_store.verify import every_user_online
from streamflow_assets.months import event_timestamp
from streamflow_assets.settings import Settings
from streamflow_assets.table_specs import LABELS, SNAPSHOT_TABLES, TABLES
from streamflow_assets.warehouse import (
    DROPS_SCHEMA,
    SNAPSHOT_MONTHS_SCHEMA,
    month_name,
    month_table,
)
from streamflow_assets_tests.conftest import (
    TEST_URL_VAR,
    Warehouse,
    create_database,
    drop_database,
    failure_text,
    free_port,
    lock_redis_database,
    materialization,
    read_month,
    while_rematerializing_online,
)
from streamflow_bench.faults import FAULT_GROUPS

PROJECT = Path(__file__).resolve().parents[1]

SAMPLES = {
    ValueType.INT64: ("bigint", [0, 1, 127, 128, 300, 16383, 16384, 2**35, 2**62, -1, -300, None]),
    ValueType.DOUBLE: ("numeric", [0, 1.5, 100, 12.34, 99.99, -3.25, 1e-7, 123456.789, None]),
    ValueType.BOOL: ("boolean", [True, False, None]),
    ValueType.STRING: ("text", ["DSL", "Fiber optic", "", "héllo wörld ✓", "x" * 200, None]),
}


@pytest.mark.smoke
@pytest.mark.parametrize("value_type", list(SAMPLES), ids=lambda t: t.name)
def test_value_encoder_writes_the_bytes_feast_writes(database_url, value_type):
    pg_type, values = SAMPLES[value_type]
    encoded, text = value_sql(value_type, "v")
    with psycopg.connect(libpq_url(database_url)) as conn:
        for value in values:
            query = f"SELECT {encoded}, {text} FROM (SELECT CAST(%s AS {pg_type}) AS v) t"
            got_bytes, got_text = conn.execute(query, (value,)).fetchone()
            want = python_values_to_proto_values([value], value_type)[0]
            assert bytes(got_bytes) == want.SerializeToString(), value
            assert got_text == extract_text_and_num(want, False)[0], value


@pytest.mark.smoke
def test_entity_key_encoder_writes_the_bytes_feast_writes(database_url):
    key, params = entity_key_sql("user_id", "u")
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        for user_id in ["7590-VHVEG", "0000-AAAAA", "ü-ñ"]:
            got = conn.execute(
                sa.text(f"SELECT {key} FROM (SELECT CAST(:u AS text) AS u) t"),
                {**params, "u": user_id},
            ).scalar()
            want = serialize_entity_key(
                EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=user_id)]), 3
            )
            assert bytes(got) == want
    engine.dispose()


@pytest.mark.smoke
def test_feast_cli_applies_and_lists_with_nothing_but_the_settings(server_url, tmp_path):
    """`cd feature_repo && feast apply` then `feast feature-views list`: the connection comes
    from the project's settings (the test server; with no variable: the embedded one)."""
    url = create_database(server_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFLOW_")}
    if os.environ.get(TEST_URL_VAR):
        env["STREAMFLOW_DATABASE_URL"] = libpq_url(url)
    else:  # the embedded server of the test session, found through STREAMFLOW_HOME only
        env["STREAMFLOW_HOME"] = str(Path(url.query["host"]).parent)
    feast = [sys.executable, "-m", "feast.cli.cli"]
    try:
        applied = subprocess.run(
            [*feast, "apply"],
            cwd=feature_repo(Settings.from_env()),
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert applied.returncode == 0, applied.stdout + applied.stderr
        listed = subprocess.run(
            [*feast, "feature-views", "list"],
            cwd=feature_repo(Settings.from_env()),
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert listed.returncode == 0, listed.stderr
        for name in (
            "subs_profile_fv",
            "usage_agg_30d_fv",
            "payments_agg_90d_fv",
            "support_agg_90d_fv",
            "churn_derived_features",
        ):
            assert name in listed.stdout
        from_python = subprocess.run(
            [
                sys.executable,
                "-c",
                "from feast import FeatureStore; print(sorted(v.name for v in "
                "FeatureStore(repo_path='feature_repo').list_feature_views()))",
            ],
            cwd=PROJECT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert from_python.returncode == 0, from_python.stderr
        assert "'subs_profile_fv'" in from_python.stdout
    finally:
        drop_database(server_url, url)


# ---- the graph on two months, in both orders and two server time zones ------------------------


def _online(users: list[str]) -> pd.DataFrame:
    store = feature_store(Settings.from_env())
    frame = store.get_online_features(
        features=store.get_feature_service(FEATURE_SERVICE),
        entity_rows=[{"user_id": u} for u in users],
    ).to_df()
    return frame.set_index("user_id").sort_index()


def _drop_features(drops: Path, month: int) -> pd.DataFrame:
    """A month's feature values straight from the drop files, typed like the training CSV."""
    subs = read_month(drops, month, "subscriptions")
    usage = read_month(drops, month, "usage_agg_30d")
    payments = read_month(drops, month, "payments_agg_90d")
    support = read_month(drops, month, "support_agg_90d")
    labels = read_month(drops, month, "labels")
    frame = (
        labels.merge(subs, on="user_id")
        .merge(usage, on="user_id")
        .merge(payments, on="user_id")
        .merge(support, on="user_id")
        .set_index("user_id")
        .sort_index()
    )
    out = pd.DataFrame(index=frame.index)
    out["months_active"] = frame["months_active"].astype(int)
    out["monthly_fee"] = frame["monthly_fee"].astype(float)
    out["net_service"] = frame["net_service"]
    out["watch_hours_30d"] = frame["watch_hours_30d"].astype(float)
    out["failed_payments_90d"] = frame["failed_payments_90d"].astype(int)
    out["support_tickets_90d"] = frame["support_tickets_90d"].astype(int)
    out["churn_label"] = frame["churn_label"].str.lower().isin(["true", "1", "yes"])
    return out


@contextlib.contextmanager
def _two_orders(server_url, seed_drops, tmp_path_factory, online=None, selection=None):
    """Months 1 and 2 loaded in order on a UTC database, and 2 then 1 on a database whose
    sessions run in America/New_York; yields both warehouses by name. `online()` gives each
    warehouse's online store settings (None: PostgreSQL)."""
    made = {}
    with pytest.MonkeyPatch.context() as patch:
        for name, order, zone in (
            ("utc", ("2024-01", "2024-02"), "UTC"),
            ("new_york", ("2024-02", "2024-01"), "America/New_York"),
        ):
            url = create_database(server_url)
            with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
                conn.execute(f"ALTER DATABASE \"{url.database}\" SET timezone = '{zone}'")
            warehouse = Warehouse(url, seed_drops, patch, online() if online else None)
            warehouse.output = tmp_path_factory.mktemp(f"processed_{name}")
            warehouse.load(*order, selection=selection)
            made[name] = warehouse
        yield made
        for warehouse in made.values():
            warehouse.engine.dispose()
            drop_database(server_url, warehouse.url)


@pytest.fixture(scope="module")
def two_orders(server_url, seed_drops, tmp_path_factory):
    """The whole graph of months 1 and 2 in both orders (see `_two_orders`), online in
    PostgreSQL."""
    with _two_orders(server_url, seed_drops, tmp_path_factory) as made:
        yield made


@pytest.fixture(scope="module", params=["postgres", "redis"])
def two_orders_online(request, server_url, seed_drops, tmp_path_factory):
    """`two_orders` with each online store: PostgreSQL, and a Redis database per warehouse (the
    feature store's part of the graph)."""
    if request.param == "postgres":
        yield request.getfixturevalue("two_orders")
        return
    databases = request.getfixturevalue("redis_databases")
    groups = dg.AssetSelection.groups(*FAULT_GROUPS)
    with contextlib.ExitStack() as leases:

        def next_database() -> dict[str, str]:
            return leases.enter_context(databases.lease())

        with _two_orders(server_url, seed_drops, tmp_path_factory, next_database, groups) as made:
            yield made


SNAPSHOTS = [t.snapshot.name for t in SNAPSHOT_TABLES if t is not LABELS]
"""The feature views' sources."""


def online_dump(warehouse) -> dict:
    """Everything of the warehouse's online store, comparable across warehouses: every row of
    every online table in PostgreSQL (created_ts left out), every hash in Redis."""
    if warehouse.online:
        warehouse.activate()
        client = redis_client(feature_store(Settings.from_env()))
        return {key: client.hgetall(key) for key in client.scan_iter(count=1000)}
    with warehouse.engine.connect() as conn:
        tables = conn.execute(
            sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'feast_online'")
        ).scalars()
        return {
            table: sorted(
                conn.execute(
                    sa.text(
                        "SELECT entity_key, feature_name, value, event_ts "
                        f'FROM feast_online."{table}"'
                    )
                ).all()
            )
            for table in tables
        }


def test_server_time_zone_is_what_the_test_claims(two_orders):
    made = two_orders
    zone = made["new_york"].frame("SELECT current_setting('TimeZone') AS tz").tz[0]
    assert zone == "America/New_York"


@pytest.mark.parametrize("name", ["utc", "new_york"])
@pytest.mark.parametrize(("partition", "month"), [("2024-01", 0), ("2024-02", 1)])
def test_training_csv_carries_that_months_values_and_labels(
    two_orders, seed_drops, name, partition, month
):
    made = two_orders
    warehouse = made[name]
    as_of = {"2024-01": "2024-01-31", "2024-02": "2024-02-29"}[partition]
    csv = pd.read_csv(warehouse.output / f"training_df_{as_of}.csv").set_index("user_id")
    expected = _drop_features(seed_drops, month)
    assert list(csv.index) == list(expected.index)
    for column in expected.columns:
        assert csv[column].tolist() == expected[column].tolist(), column
    assert set(pd.to_datetime(csv["event_timestamp"], utc=True)) == {event_timestamp(partition)}
    header = list(pd.read_csv(warehouse.output / f"training_df_{as_of}.csv", nrows=0).columns)
    assert header[:2] == ["user_id", "event_timestamp"] and header[-1] == "churn_label"
    for derived in ("fee_per_watch_hour", "tenure_bucket", "tickets_per_active_month"):
        assert derived in header


def test_both_orders_and_time_zones_give_identical_training_csvs(two_orders):
    made = two_orders
    for as_of in ("2024-01-31", "2024-02-29"):
        utc = (made["utc"].output / f"training_df_{as_of}.csv").read_bytes()
        assert utc == (made["new_york"].output / f"training_df_{as_of}.csv").read_bytes()


@pytest.mark.parametrize("name", ["utc", "new_york"])
def test_online_store_holds_the_newest_month(two_orders_online, seed_drops, name):
    """Month 2's values for its users; users missing from month 2 keep month 1's; the same
    whether month 1 ran first or last."""
    made = two_orders_online
    made[name].activate()
    first, second = _drop_features(seed_drops, 0), _drop_features(seed_drops, 1)
    only_first = sorted(set(first.index) - set(second.index))
    assert only_first, "the seed drops should have users who left after month 1"
    online = _online(list(second.index) + only_first)
    expected = pd.concat([second, first.loc[only_first]]).sort_index()
    for column in (
        "months_active",
        "monthly_fee",
        "net_service",
        "watch_hours_30d",
        "failed_payments_90d",
        "support_tickets_90d",
    ):
        assert online[column].tolist() == expected[column].tolist(), column


def test_online_store_identical_after_either_order(two_orders_online):
    made = two_orders_online
    utc, new_york = online_dump(made["utc"]), online_dump(made["new_york"])
    assert utc == new_york
    assert len(utc) > 0 and all(utc.values())


def test_rerunning_an_old_month_changes_neither_online_nor_newer_training(two_orders_online):
    made = two_orders_online
    warehouse = made["utc"]
    online_before = online_dump(warehouse)
    training = warehouse.output / "training_df_2024-02-29.csv"
    training_before = training.read_bytes() if training.exists() else None
    groups = dg.AssetSelection.groups(*FAULT_GROUPS)
    result = warehouse.materialize("2024-01", selection=groups if warehouse.online else None)
    assert result.success, failure_text(result)
    assert online_dump(warehouse) == online_before
    if training_before is not None:
        assert training.read_bytes() == training_before
    metadata = materialization(result, "online_features").metadata
    if warehouse.online:  # each view of a user of both months keeps 2024-02
        both = " + ".join(
            f"(SELECT count(*) FROM {t} a JOIN {t} b USING (user_id) "
            "WHERE a.as_of = '2024-01-31' AND b.as_of = '2024-02-29')"
            for t in SNAPSHOTS
        )
        kept = warehouse.frame(f"SELECT {both} AS n").n[0]
        assert kept > 0 and metadata["views left with newer values"].value == kept
    else:  # every view saw newer values online and kept them
        assert metadata["by feature view"].value.count("| True |") == 4
    online_checks = [
        c for c in result.get_asset_check_evaluations() if c.asset_key.path == ["online_features"]
    ]
    assert len(online_checks) == 2
    assert all(c.passed for c in online_checks), [
        (c.check_name, c.description) for c in online_checks
    ]


def test_training_matches_feasts_get_historical_features(two_orders):
    """Our point-in-time query gives what Feast's gives, feature for feature. (Feast's own
    path turns NUMERIC into doubles with an error in the last bit, e.g. 96.96 -> 96.96000000000001,
    hence the tolerance; ours carries the exact values, as the online store does.)"""
    warehouse = two_orders["new_york"]
    warehouse.activate()
    _assert_training_matches_feast(warehouse, "2024-02")


def test_any_source_path_gives_the_snapshot_paths_rows(two_orders, monkeypatch):
    """A feature view over a table that is not a monthly snapshot takes the general path (one
    `DISTINCT ON` over its rows inside the ttl): on the snapshots it gives the same rows."""
    warehouse = two_orders["utc"]
    warehouse.activate()
    store = feature_store(Settings.from_env())
    for partition in ("2024-01", "2024-02"):
        snapshot_path = training_table(warehouse.engine, store, partition)
        with monkeypatch.context() as patch:
            patch.setattr(training, "SNAPSHOT_NAMES", set())
            assert training_table(warehouse.engine, store, partition).equals(snapshot_path)


def test_users_missing_from_a_month_take_feasts_values_from_the_month_before(new_warehouse):
    """Month M's query reads month M's snapshot partitions; a user missing from one of them
    falls back to month M-1's row (inside the views' ttl), as Feast's `get_historical_features`
    does, and a user missing from both has empty features, as in Feast."""
    warehouse = new_warehouse()
    selection = dg.AssetSelection.groups("ingestion", "snapshots") | dg.AssetSelection.assets(
        "feast_registry"
    )
    warehouse.load("2024-01", "2024-02", selection=selection)
    fallback, gone = warehouse.frame(
        "SELECT user_id FROM labels_snapshots WHERE as_of = '2024-02-29' ORDER BY user_id LIMIT 2"
    ).user_id
    january = warehouse.frame(
        "SELECT watch_hours_30d, months_active FROM usage_agg_30d_snapshots "
        "JOIN subscriptions_profile_snapshots USING (user_id, as_of) "
        "WHERE as_of = '2024-01-31' AND user_id = :u",
        u=fallback,
    )
    assert len(january) == 1
    with warehouse.engine.begin() as conn:
        for table in ("usage_agg_30d_snapshots", "subscriptions_profile_snapshots"):
            conn.execute(
                sa.text(f"DELETE FROM {table} WHERE as_of = '2024-02-29' AND user_id = :u"),
                {"u": fallback},
            )
        conn.execute(sa.text("DELETE FROM usage_agg_30d_snapshots WHERE user_id = :u"), {"u": gone})
    ours = _assert_training_matches_feast(warehouse, "2024-02").set_index("user_id")
    assert float(ours.watch_hours_30d[fallback]) == float(january.watch_hours_30d[0])
    assert ours.months_active[fallback] == january.months_active[0]
    assert pd.isna(ours.watch_hours_30d[gone]) and pd.notna(ours.months_active[gone])


def _assert_training_matches_feast(warehouse, partition: str) -> pd.DataFrame:
    """Assert that `training_table` of a month equals Feast's `get_historical_features` for the
    same entity rows, column by column; return ours."""
    store = feature_store(Settings.from_env())
    ours = training_table(warehouse.engine, store, partition).to_pandas()
    entities = ours[["user_id", "event_timestamp"]]
    theirs = (
        store.get_historical_features(
            entity_df=entities, features=store.get_feature_service(FEATURE_SERVICE)
        )
        .to_df()
        .sort_values("user_id")
        .reset_index(drop=True)
    )
    assert list(theirs.columns) == [c for c in ours.columns if c != "churn_label"]
    for column in theirs.columns:
        if column == "event_timestamp":
            continue
        a, b = ours[column], theirs[column]
        if a.dtype.kind == "f":
            pd.testing.assert_series_equal(a, b.astype(float), rtol=1e-3, check_names=False)
        else:
            assert (
                a.astype(object).where(a.notna(), None).tolist()
                == b.astype(object).where(b.notna(), None).tolist()
            ), column
    return ours


@pytest.mark.parametrize("name", ["utc", "new_york"])
def test_every_user_online_compares_digests_for_the_newest_month_and_joins_for_an_older(
    two_orders, name
):
    """With both months online, February's users (January's leavers online with January's
    values) are proved online by set digests alone; January, under February's newer values, is
    counted by the join. Both pass."""
    made = two_orders
    made[name].activate()
    store = feature_store(Settings.from_env())
    for partition, compared_by in (("2024-02", "set digests"), ("2024-01", "join")):
        outcome = every_user_online(made[name].engine, store, partition)
        assert outcome.passed, outcome.description
        table = outcome.metadata["by feature view"]
        assert table.count(f"| {compared_by} |") == 4, table


def test_registry_apply_is_idempotent(two_orders):
    made = two_orders
    warehouse = made["utc"]
    result = warehouse.materialize("2024-02", selection="feast_registry")
    assert result.success, failure_text(result)
    metadata = materialization(result, "feast_registry").metadata
    assert metadata["created"].value == "none"
    assert metadata["updated"].value == "none"
    assert metadata["deleted"].value == "none"
    assert metadata["unchanged objects"].value >= 10


def test_online_store_keeps_answering_while_a_month_is_materialized(two_orders_online):
    made = two_orders_online
    warehouse = made["utc"]
    warehouse.activate()
    users = list(_online_users(warehouse))[:20]
    errors, answers, mixed = [], [], []

    def read(done):
        # Another process in production; a thread with its own FeatureStore here.
        from feast import FeatureStore

        store = FeatureStore(repo_path=str(feature_repo(Settings.from_env())))
        while not done.is_set():
            try:
                columns = store.get_online_features(
                    features=store.get_feature_service(FEATURE_SERVICE),
                    entity_rows=[{"user_id": u} for u in users],
                ).to_dict(include_event_timestamps=True)
            except Exception as exc:  # any failure to serve is the bug
                errors.append(repr(exc))
                continue
            answers.append(sum(v is not None for v in columns["months_active"]))
            stamps = [k for k in columns if k.endswith("__ts")]
            for i, user in enumerate(users):
                months = {columns[k][i] for k in stamps} - {0}  # 0: on-demand features
                if len(months) > 1:  # one user's views from two months
                    mixed.append((user, sorted(months)))

    while_rematerializing_online(warehouse, read)
    assert not errors
    assert not mixed
    assert len(answers) > 3 and set(answers) == {len(users)}


def _online_users(warehouse) -> list[str]:
    return warehouse.frame(
        "SELECT user_id FROM subscriptions_profile_snapshots WHERE as_of = '2024-02-29' "
        "ORDER BY user_id"
    ).user_id.tolist()


def test_unexpected_empty_feature_fails_the_check_and_writes_nothing(new_warehouse):
    """A user missing from a feature view's snapshot (no earlier month to fall back on) would
    train on empty features: the check fails naming the column and user, no CSV is written."""
    warehouse = new_warehouse()
    result = warehouse.materialize(
        "2024-01",
        selection=[
            "users",
            "subscriptions",
            "usage_agg_30d",
            "payments_agg_90d",
            "support_agg_90d",
            "labels",
            "subscriptions_profile_snapshots",
            "usage_agg_30d_snapshots",
            "payments_agg_90d_snapshots",
            "support_agg_90d_snapshots",
            "labels_snapshots",
            "feast_registry",
        ],
    )
    assert result.success, failure_text(result)
    victim = warehouse.frame(
        "SELECT min(user_id) AS u FROM usage_agg_30d_snapshots WHERE as_of = '2024-01-31'"
    ).u[0]
    with warehouse.engine.begin() as conn:
        conn.execute(
            sa.text("DELETE FROM usage_agg_30d_snapshots WHERE user_id = :u"), {"u": victim}
        )
    result = warehouse.materialize("2024-01", selection="training_dataset")
    assert not result.success
    text = failure_text(result)
    assert "no_unexpected_null_feature" in text and "watch_hours_30d" in text and victim in text
    assert not (warehouse.output / "training_df_2024-01-31.csv").exists()
    checks = {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert checks == {
        "one_row_per_snapshot_user": True,
        "no_unexpected_null_feature": False,
        "label_rate_in_range": True,
    }


def test_a_block_that_cannot_be_written_fails_the_write(tmp_path):
    """The CSV is written by a thread: a write's error reaches the month's build."""
    schema = pa.schema([("user_id", pa.string())])
    with pa_csv.CSVWriter(tmp_path / "t.csv", schema) as writer, training._Writes(writer) as writes:
        writes.add(pa.table({"user_id": ["a"]}))
        writes.add(pa.table({"user_id": [[1]]}))  # a list has no CSV form
        with pytest.raises(pa.ArrowNotImplementedError, match="Unsupported cast from list"):
            writes.wait()


def test_a_training_csv_built_in_small_blocks_is_the_one_built_at_once(new_warehouse, monkeypatch):
    """The month is built, checked and written a block of PostgreSQL's CSV at a time: with
    1 KB blocks (over ten of them) the file, the kept drift sample (50 rows here, taken from
    across the blocks) and the checks are the ones a single block gives; an empty feature in
    the last block is counted and named."""
    monkeypatch.setattr(monitoring, "SAMPLE_ROWS", 50)
    warehouse = new_warehouse()
    groups = dg.AssetSelection.groups(*FAULT_GROUPS)
    warehouse.load("2024-01", selection=groups | dg.AssetSelection.assets("training_dataset"))
    csv = warehouse.output / "training_df_2024-01-31.csv"
    kept = warehouse.output / "drift" / "2024-01.sample.arrow"
    whole, whole_sample = csv.read_bytes(), feather.read_table(kept)
    assert whole_sample.num_rows == 50
    monkeypatch.setattr(training, "BLOCK_BYTES", 1024)
    blocks = list(training.training_blocks(warehouse.engine, feature_store(Settings.from_env()),
                                           "2024-01"))  # fmt: skip
    assert len(blocks) > 10

    result = warehouse.materialize("2024-01", selection="training_dataset")
    assert result.success, failure_text(result)
    assert csv.read_bytes() == whole
    assert feather.read_table(kept).equals(whole_sample)
    # A month whose kept sample is lost: the same rows are read from its CSV, 1 KB at a time.
    monkeypatch.setattr(monitoring, "CSV_BLOCK_BYTES", 1024)
    kept.unlink()
    store = feature_store(Settings.from_env())
    assert training.previous_features(
        warehouse.engine, store, warehouse.output, "2024-01", whole_sample.schema
    ).equals(whole_sample)
    metadata = materialization(result, "training_dataset").metadata
    assert metadata["rows"].value == len(whole.splitlines()) - 1

    last = warehouse.frame(
        "SELECT max(user_id) AS u FROM usage_agg_30d_snapshots WHERE as_of = '2024-01-31'"
    ).u[0]
    with warehouse.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM usage_agg_30d_snapshots WHERE user_id = :u"), {"u": last})
    result = warehouse.materialize("2024-01", selection="training_dataset")
    assert not result.success
    assert f"watch_hours_30d: 1 empty (e.g. {last})" in failure_text(result)
    assert csv.read_bytes() == whole  # the month's CSV stays the one that passed


def test_a_disk_that_fills_up_midway_fails_the_month_and_keeps_its_csv(new_warehouse, monkeypatch):
    """The CSV is written by a thread of its own: a write that fails after the first blocks
    (the disk full) fails the month's build with the disk's error, and leaves the month's CSV
    and drift sample of the run before as they were, with nothing half-written beside them."""
    warehouse = new_warehouse()
    groups = dg.AssetSelection.groups(*FAULT_GROUPS)
    warehouse.load("2024-01", selection=groups | dg.AssetSelection.assets("training_dataset"))
    csv = warehouse.output / "training_df_2024-01-31.csv"
    before = {p: p.read_bytes() for p in warehouse.output.rglob("*") if p.is_file()}
    assert csv in before

    class DiskFillsUp(pa_csv.CSVWriter):
        blocks = 0

        def write_table(self, table, max_chunksize=None):
            DiskFillsUp.blocks += 1
            if DiskFillsUp.blocks > 3:
                raise OSError(28, "No space left on device")
            super().write_table(table, max_chunksize)

    monkeypatch.setattr(training, "BLOCK_BYTES", 1024)
    monkeypatch.setattr(training.pa_csv, "CSVWriter", DiskFillsUp)
    result = warehouse.materialize("2024-01", selection="training_dataset")

    assert not result.success
    assert DiskFillsUp.blocks > 3
    assert "No space left on device" in failure_text(result)
    after = {p: p.read_bytes() for p in warehouse.output.rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.parametrize("name", ["utc", "new_york"])
def test_the_registry_keeps_every_months_interval_in_either_order(two_orders, name):
    made = two_orders
    made[name].activate()
    store = feature_store(Settings.from_env())
    expected = {
        (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)),
        (datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)),
    }
    views = store.registry.list_feature_views(store.project, allow_cache=False)
    assert len(views) == 4
    for view in views:
        assert set(view.materialization_intervals) == expected, view.name
    with made[name].engine.connect() as conn:
        assert published_months(conn) == ["2024-01", "2024-02"]


@pytest.mark.parametrize(
    "order", [("2024-01", "2024-02", "2024-03"), ("2024-03", "2024-01", "2024-02")]
)
def test_three_months_in_any_order_keep_every_months_interval(new_warehouse, order):
    """The lost update first seen after `streamflow run` of the three sample months."""
    warehouse = new_warehouse()
    warehouse.load(*order, selection=dg.AssetSelection.groups(*FAULT_GROUPS))
    store = feature_store(Settings.from_env())
    months = [datetime(2024, m, 1, tzinfo=UTC) for m in (1, 2, 3, 4)]
    expected = set(itertools.pairwise(months))
    views = store.registry.list_feature_views(store.project, allow_cache=False)
    assert len(views) == 4
    for view in views:
        assert set(view.materialization_intervals) == expected, view.name
    with warehouse.engine.connect() as conn:
        assert published_months(conn) == ["2024-01", "2024-02", "2024-03"]


# ---- Redis: Feast's own format, and a Redis Cluster --------------------------------------------


def test_redis_writer_writes_what_feasts_own_materialize_writes(new_warehouse, redis_server):
    """Every key, field and value byte for byte (doubles to the last bit Feast's own reading
    of NUMERIC gets wrong): our month in one Redis database, Feast's own `materialize()` of the
    same window in another."""
    ours_env, feasts_env = redis_server(), redis_server()
    warehouse = new_warehouse(online=ours_env)
    warehouse.load("2024-01", selection=dg.AssetSelection.groups(*FAULT_GROUPS))
    ours = online_dump(warehouse)
    warehouse.online = feasts_env
    warehouse.activate()
    store = feature_store(Settings.from_env())
    store.materialize(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC))
    feasts = online_dump(warehouse)
    users = warehouse.frame(
        "SELECT count(*) AS n FROM subscriptions_profile_snapshots WHERE as_of = '2024-01-31'"
    ).n[0]
    assert len(ours) == users > 0
    assert ours.keys() == feasts.keys()
    differ = []
    for key, fields in ours.items():
        assert fields.keys() == feasts[key].keys()
        for field, value in fields.items():
            if value != feasts[key][field]:
                differ.append((Value.FromString(value), Value.FromString(feasts[key][field])))
    # Feast's own path reads NUMERIC as a double with an error in the last bit (96.96 ->
    # 96.96000000000001); ours encodes the exact value, as the PostgreSQL store does.
    assert all(
        a.WhichOneof("val") == b.WhichOneof("val") == "double_val"
        and math.isclose(a.double_val, b.double_val, rel_tol=1e-15)
        for a, b in differ
    ), differ[:5]


def test_redis_cluster_serves_the_newest_month_from_every_master(
    new_warehouse, redis_cluster, seed_drops
):
    """Through Feast's `redis_type: redis_cluster`: month 2 then 1 written by the same writer,
    read back through `get_online_features`, the online checks green, the users' keys spread
    over the three masters' slots."""
    import redis

    warehouse = new_warehouse(online=redis_cluster)
    warehouse.load("2024-02", "2024-01", selection=dg.AssetSelection.groups(*FAULT_GROUPS))
    first, second = _drop_features(seed_drops, 0), _drop_features(seed_drops, 1)
    only_first = sorted(set(first.index) - set(second.index))
    online = _online(list(second.index) + only_first)
    expected = pd.concat([second, first.loc[only_first]]).sort_index()
    for column in ("months_active", "monthly_fee", "net_service", "support_tickets_90d"):
        assert online[column].tolist() == expected[column].tolist(), column
    keys = [redis.Redis(port=int(p)).dbsize() for p in redis_cluster["ports"].split(",")]
    assert all(n > 0 for n in keys) and sum(keys) == len(set(first.index) | set(second.index))
    result = warehouse.materialize("2024-02", selection="online_features")
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"every_user_online": True, "online_matches_offline": True}


def test_every_user_online_on_redis_names_a_missing_user_and_counts_unknown_keys(
    new_warehouse, redis_server
):
    """The check can fail on Redis: a key of a user no month had is counted, and a user of the
    month whose hash is gone is named."""
    warehouse = new_warehouse(online=redis_server())
    warehouse.load("2024-01", selection=dg.AssetSelection.groups(*FAULT_GROUPS))
    store = feature_store(Settings.from_env())
    assert every_user_online(warehouse.engine, store, "2024-01").passed
    client = redis_client(store)
    victim = warehouse.frame(
        "SELECT min(user_id) AS u FROM subscriptions_profile_snapshots WHERE as_of = '2024-01-31'"
    ).u[0]
    (key,) = [k for k in client.scan_iter(count=1000) if victim.encode() + b"streamflow" in k]
    stranger = key.replace(victim.encode(), b"9999-NOONE")
    client.copy(key, stranger)
    outcome = every_user_online(warehouse.engine, store, "2024-01")
    assert not outcome.passed
    assert "1 online users no month ever had" in outcome.description
    client.delete(stranger, key)
    outcome = every_user_online(warehouse.engine, store, "2024-01")
    assert not outcome.passed
    assert "1 users of the month not online" in outcome.description
    assert victim in outcome.metadata["by feature view"]


def test_a_redis_that_does_not_answer_is_named_and_nothing_changes(new_warehouse, redis_server):
    warehouse = new_warehouse(online=redis_server())
    warehouse.load("2024-01", selection=dg.AssetSelection.groups(*FAULT_GROUPS))
    published = warehouse.frame("SELECT * FROM streamflow_meta.online_months")
    closed = free_port()
    warehouse.online["STREAMFLOW_REDIS_URL"] = f"redis://127.0.0.1:{closed}/0"
    result = warehouse.materialize("2024-01", "online_features")
    assert not result.success
    text = failure_text(result)
    assert f"the Redis online store at 127.0.0.1:{closed} does not answer" in text
    assert "STREAMFLOW_REDIS_URL" in text
    pd.testing.assert_frame_equal(
        warehouse.frame("SELECT * FROM streamflow_meta.online_months"), published
    )


def test_online_tables_swapped_in_are_the_ones_feast_created(new_warehouse):
    """A month's online tables are built beside Feast's and swapped in: the same columns (types
    and NOT NULL), primary keys and indexes, under the same names, as `feast apply` made."""
    warehouse = new_warehouse()
    before_online = dg.AssetSelection.groups(*FAULT_GROUPS) - dg.AssetSelection.assets(
        "online_features"
    )
    warehouse.load("2024-01", selection=before_online)
    store = feature_store(Settings.from_env())
    schema = store.config.online_store.db_schema

    def layout() -> dict[str, list[tuple]]:
        queries = {
            "columns": "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), "
            "a.attnotnull FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "WHERE c.relnamespace = to_regnamespace(:s) AND c.relkind = 'r' AND a.attnum > 0 "
            "AND NOT a.attisdropped ORDER BY 1, a.attnum",
            "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = :s ORDER BY 1, 2",
            "constraints": "SELECT conrelid::regclass::text, conname, contype, "
            "pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE connamespace = to_regnamespace(:s) ORDER BY 1, 2",
        }
        return {
            name: [tuple(row) for row in warehouse.frame(query, s=schema).itertuples(index=False)]
            for name, query in queries.items()
        }

    applied = layout()
    assert {row[2] for row in applied["constraints"]} == {"p"}
    assert any(not_null for *_, not_null in applied["columns"])
    warehouse.load("2024-01", selection="online_features")
    for view in store.list_feature_views():
        table = ".".join(online_table(store.config, view))
        assert warehouse.frame(f"SELECT count(*) AS n FROM {table}").n[0] > 0, table
    assert layout() == applied


def test_swapped_in_tables_are_analyzed_by_their_builder_and_left_alone_by_autovacuum(
    new_warehouse,
):
    """The live and online tables a month swaps in, its records of the drop and its snapshot
    partitions are written once and never updated in place: their builder analyzes them, and
    autovacuum is off on them, because an autovacuum holding a staged table starves the swap
    (its short lock timeout gives up before PostgreSQL would cancel the autovacuum), and
    vacuums of ten-million-row tables compete with the month's next steps — seen at 10M users."""
    warehouse = new_warehouse()
    warehouse.load("2024-01", selection=dg.AssetSelection.groups(*FAULT_GROUPS))
    store = feature_store(Settings.from_env())
    online = [
        f"{config_schema}.{table}"
        for config_schema, table in (
            online_table(store.config, view) for view in store.list_feature_views()
        )
    ]
    records = [f"{DROPS_SCHEMA}.{month_table(t, '2024-01')}" for t in TABLES]
    partitions = [
        f"{SNAPSHOT_MONTHS_SCHEMA}.{month_name(t.snapshot.name, '2024-01')}"
        for t in SNAPSHOT_TABLES
    ]
    tables = [*(t.name for t in TABLES), *online, *records, *partitions]
    found = warehouse.frame(
        "SELECT c.oid::regclass::text AS name, c.reloptions, "
        "(SELECT count(*) FROM pg_statistic s WHERE s.starelid = c.oid) AS stats "
        "FROM pg_class c WHERE c.oid = ANY(CAST(:tables AS regclass[]))",
        tables=tables,
    ).set_index("name")
    assert len(found) == len(tables) == 10 + 6 + len(SNAPSHOT_TABLES)
    for name, row in found.iterrows():
        assert row.reloptions == ["autovacuum_enabled=false"], name
        assert row.stats > 0, name


def test_two_test_sessions_on_one_machine_never_share_a_redis_database(redis_databases):
    """A lease flushes its Redis database: two test sessions at once (this one and a child
    process here) must lease different ones, and a database is free again once its lease ends."""
    holder = (
        "import sys\n"
        "from streamflow_assets_tests.conftest import RedisDatabases\n"
        f"with RedisDatabases({redis_databases.base!r}).lease() as env:\n"
        "    print(env['STREAMFLOW_REDIS_URL'], flush=True)\n"
        "    sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        theirs = child.stdout.readline().strip()
        with redis_databases.lease() as mine, redis_databases.lease() as also_mine:
            urls = [theirs, mine["STREAMFLOW_REDIS_URL"], also_mine["STREAMFLOW_REDIS_URL"]]
            assert theirs.startswith(redis_databases.base) and len(set(urls)) == 3, urls
    finally:
        child.communicate("", timeout=60)
    assert child.returncode == 0
    lock = lock_redis_database(theirs)
    assert lock is not None, f"{theirs} still leased after its session ended"
    lock.close()
