"""The churn model's lifecycle on generated drops, with a real MLflow store in the test database:
candidates, champion/challenger decided by months, scores by the champion, /predict following
the champion, and what happens when a candidate loses or an artifact is broken."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from streamflow_assets.definitions import defs
from streamflow_assets.feature_store import training
from streamflow_assets.feature_store.repo import FEATURE_SERVICE, feature_store
from streamflow_assets.feature_store.training import (
    read_training_sample,
    training_path,
)
from streamflow_assets.model import LoadedModel, calibration_outcome, load
from streamflow_assets.model_registry import MODEL_NAME, Registry, RegistryError
from streamflow_assets.settings import Settings
from streamflow_assets_tests.conftest import (
    SEED_USERS,
    Warehouse,
    create_database,
    drop_database,
    failure_text,
    materialization,
    read_month,
    start_api,
    stop_api,
)

MODEL_GROUP = dg.AssetSelection.groups("model")
MONTHS = ("2024-01", "2024-02", "2024-03")


@pytest.fixture(scope="module")
def modelled(server_url, seed_drops) -> Iterator[Warehouse]:
    """Three months through the whole graph, models included."""
    url = create_database(server_url)
    with pytest.MonkeyPatch.context() as patch:
        warehouse = Warehouse(url, seed_drops, patch)
        warehouse.load(*MONTHS)
        yield warehouse
        warehouse.engine.dispose()
    drop_database(server_url, url)


def registry(warehouse: Warehouse) -> Registry:
    warehouse.activate()
    return Registry(Settings.from_env())


def check_evaluations(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_every_candidate_is_a_run_and_a_version_with_its_lineage(modelled):
    reg = registry(modelled)
    decisions = reg.decisions()
    assert sorted(decisions) == list(MONTHS)
    march = decisions["2024-03"]
    assert march.training_months == ["2024-01", "2024-02"]
    assert decisions["2024-01"].training_months == ["2024-01"]
    run = reg.client.get_run(march.run_id)
    assert run.data.params["training_months"] == "2024-01,2024-02"
    assert run.data.params["holdout"] == "month 2024-03"
    assert run.data.params["feature_service"] == FEATURE_SERVICE
    for metric in ("roc_auc", "log_loss", "majority_class_log_loss", "logistic_regression_roc_auc"):
        assert metric in run.data.metrics
    january = reg.client.get_run(decisions["2024-01"].run_id)
    assert january.data.metrics["test_rows"] == SEED_USERS // 5
    assert january.data.metrics["train_rows"] == SEED_USERS - SEED_USERS // 5
    artifacts = {a.path for a in reg.client.list_artifacts(march.run_id)}
    assert {"comparison.md", "calibration_by_decile.md", "feature_importance.md"} <= artifacts
    import mlflow.models

    info = mlflow.models.get_model_info(f"models:/{MODEL_NAME}/{march.version}")
    assert info.signature is not None
    store = feature_store(Settings.from_env())
    service = store.get_feature_service(FEATURE_SERVICE)
    served = {f.name for p in service.feature_view_projections for f in p.features}
    assert set(march.features["categorical"] + march.features["numeric"]) == served
    assert [c.name for c in info.signature.inputs.inputs] == (
        march.features["categorical"] + march.features["numeric"]
    )


def test_the_alias_names_the_champion_as_of_the_newest_month(modelled):
    reg = registry(modelled)
    decisions = reg.decisions()
    champion = reg.current_champion()
    assert champion is not None
    assert champion == reg.champion_as_of("2024-03", decisions)
    assert champion.promoted
    # The decision of a month is the champion/challenger rule applied to that month.
    for partition, decision in decisions.items():
        assert ("not promoted" in decision.reason) != decision.promoted, partition


def test_the_model_metadata_explains_the_decision(modelled):
    result = modelled.materialize("2024-03", "churn_model")
    assert result.success, failure_text(result)
    metadata = materialization(result, "churn_model").metadata
    for key in ("roc_auc", "log_loss", "decision", "model version", "calibration by decile"):
        assert key in metadata
    comparison = metadata["against the champion and baselines"].value
    assert "champion as of 2024-02" in comparison and "majority class" in comparison
    assert metadata["calibration by decile"].value.count("\n") == 11  # header, rule, 10 deciles
    assert set(check_evaluations(result)) == {
        "beats_baselines",
        "beats_champion",
        "well_calibrated",
    }
    calibrated = next(
        e for e in result.get_asset_check_evaluations() if e.check_name == "well_calibrated"
    )
    assert calibrated.severity == dg.AssetCheckSeverity.WARN
    assert 0 <= calibrated.metadata["expected calibration error"].value <= 1
    assert calibrated.metadata["hold-out users"].value > 0


def test_a_model_predicting_twice_the_churn_rate_is_flagged_as_not_calibrated():
    deciles = pd.DataFrame({"users": [1000] * 10, "churn_rate": np.linspace(0.0, 0.18, 10)})
    honest = calibration_outcome(deciles.assign(mean_predicted=deciles["churn_rate"] + 0.01))
    assert honest.passed and not honest.blocking
    assert honest.metadata["expected calibration error"] == pytest.approx(0.01)
    assert honest.metadata["allowed"] == 0.05  # 10,000 users: sampling noise is below 0.05
    doubled = calibration_outcome(deciles.assign(mean_predicted=2 * deciles["churn_rate"]))
    assert not doubled.passed
    assert doubled.metadata["mean prediction"] == pytest.approx(0.18)
    assert doubled.metadata["observed churn rate"] == pytest.approx(0.09)
    assert "mean prediction 0.1800 against a churn rate of 0.0900" in doubled.description


def test_a_small_hold_out_is_allowed_the_error_sampling_alone_gives():
    # 60 users (a first month of 300, split 80/20): 6 a decile, whose observed rates are noisy
    # even for a perfect model; a real bias of this size is still flagged on 10,000.
    rates = np.linspace(0.1, 0.5, 10)
    small = pd.DataFrame({"users": [6] * 10, "mean_predicted": rates, "churn_rate": rates + 0.1})
    noisy = calibration_outcome(small)
    assert noisy.passed and noisy.metadata["allowed"] > 0.1
    large = calibration_outcome(small.assign(users=1000))
    assert not large.passed and large.metadata["allowed"] == 0.05


def test_scores_come_from_the_champion_as_of_each_month_and_rerun_idempotently(
    modelled, monkeypatch
):
    # Earlier tests registered new versions; scores follow them when they run again.
    modelled.load(*MONTHS, selection="churn_scores")
    reg = registry(modelled)
    decisions = reg.decisions()
    for partition in MONTHS:
        as_of = pd.Period(partition).end_time.date().isoformat()
        scores = modelled.frame(
            "SELECT * FROM churn_scores WHERE as_of = :a ORDER BY user_id", a=as_of
        )
        users = modelled.frame(
            "SELECT user_id FROM labels_snapshots WHERE as_of = :a ORDER BY user_id", a=as_of
        )
        assert scores["user_id"].tolist() == users["user_id"].tolist()
        assert set(scores["model_version"]) == {reg.champion_as_of(partition, decisions).label}
        assert scores["score"].between(0, 1).all()
    query = "SELECT * FROM churn_scores ORDER BY as_of, user_id"
    before = modelled.frame(query)
    # The re-run reads the month 97 rows at a time: the same scores, into one COPY.
    monkeypatch.setattr(training, "CSV_CHUNK_ROWS", 97)
    result = modelled.materialize("2024-03", "churn_scores")
    assert result.success, failure_text(result)
    pd.testing.assert_frame_equal(modelled.frame(query), before)


def test_an_error_scoring_a_chunk_fails_the_month_and_keeps_its_scores(modelled, monkeypatch):
    """The month is scored by a thread of its own while the chunks before go into the COPY: an
    error on the third chunk stops the scoring, fails the run with that error, and leaves the
    month's scores as they were (none of the chunks already sent)."""
    query = "SELECT * FROM churn_scores ORDER BY as_of, user_id"
    before = modelled.frame(query)
    monkeypatch.setattr(training, "CSV_CHUNK_ROWS", 97)
    score, chunks = LoadedModel.score, []

    def failing_score(self, records):
        chunks.append(len(records))
        if len(chunks) == 3:
            raise ValueError("Input X contains infinity or a value too large")
        return score(self, records)

    monkeypatch.setattr(LoadedModel, "score", failing_score)
    result = modelled.materialize("2024-03", "churn_scores")
    assert not result.success
    assert "Input X contains infinity" in failure_text(result)
    assert chunks == [97, 97, 97]
    pd.testing.assert_frame_equal(modelled.frame(query), before)


def test_a_scores_table_from_before_the_partitions_is_converted_with_its_rows(modelled):
    """churn_scores used to be one plain table for every month: the next scoring converts it to
    a partition per month, every row kept, and replaces only its own month's."""
    query = "SELECT * FROM churn_scores ORDER BY as_of, user_id"
    before = modelled.frame(query)
    with modelled.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE plain AS SELECT * FROM churn_scores"))
        conn.execute(sa.text("DROP TABLE churn_scores"))
        conn.execute(sa.text("ALTER TABLE plain RENAME TO churn_scores"))
        conn.execute(sa.text("ALTER TABLE churn_scores ADD PRIMARY KEY (user_id, as_of)"))
        # a month no run will touch, and an old score of the month the run replaces
        conn.execute(sa.text("UPDATE churn_scores SET score = 0.5 WHERE as_of = '2024-03-31'"))
    result = modelled.materialize("2024-03", "churn_scores")
    assert result.success, failure_text(result)
    pd.testing.assert_frame_equal(modelled.frame(query), before)
    partitions = modelled.frame(
        "SELECT c.relnamespace::regnamespace::text AS schema, c.relname AS name, "
        "pg_get_expr(c.relpartbound, c.oid) AS bound FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'churn_scores'::regclass ORDER BY 2"
    )
    assert partitions.to_dict("records") == [
        {"schema": "score_months", "name": f"churn_scores_{m.replace('-', '_')}",
         "bound": f"FOR VALUES IN ('{pd.Period(m).end_time.date()}')"}
        for m in MONTHS
    ]  # fmt: skip
    assert not modelled.frame("SELECT to_regclass('churn_scores_unpartitioned') AS t")["t"][0]


def other_version(reg: Registry, champion) -> object:
    """A registered month other than the champion's."""
    return next(d for p, d in sorted(reg.decisions().items()) if d.version != champion.version)


def test_offline_scores_equal_predict_which_follows_the_alias(modelled):
    """churn_scores (offline) and /predict (online, over HTTP) agree; moving the alias (a new
    champion, or a roll-back) is served without a restart."""
    reg = registry(modelled)
    champion = reg.current_champion()
    scores = modelled.frame(
        "SELECT user_id, score FROM churn_scores WHERE as_of = '2024-03-31' ORDER BY user_id"
    ).head(20)
    process, base = start_api(dict(os.environ))
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            for user_id, offline in scores.itertuples(index=False):
                response = client.post("/predict", json={"user_id": user_id})
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["model_version"] == champion.label
                assert body["churn_probability"] == pytest.approx(offline, abs=1e-12)
            assert client.get("/health").json()["champion"] == champion.label
            assert client.post("/predict", json={"user_id": "0000-ZZZZZ"}).status_code == 404
            assert client.post("/predict", json={"user_id": "nope"}).status_code == 422

            other = other_version(reg, champion)
            reg.client.set_registered_model_alias(MODEL_NAME, "champion", str(other.version))
            user = scores["user_id"].iloc[0]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                body = client.post("/predict", json={"user_id": user}).json()
                if body["model_version"] == other.label:
                    break
                time.sleep(0.5)
            assert body["model_version"] == other.label
            assert client.get("/health").json()["champion"] == other.label
    finally:
        stop_api(process)
        reg.point_alias()
    assert reg.current_champion() == champion


def test_a_user_gone_for_two_months_is_served_as_stale_and_not_scored(modelled, seed_drops):
    modelled.activate()
    months = [read_month(seed_drops, m, "users")["user_id"] for m in range(3)]
    gone = sorted(set(months[0]) - set(months[1]) - set(months[2]))[0]
    process, base = start_api(dict(os.environ))
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            body = client.get(f"/features/{gone}").json()
            refused = client.post("/predict", json={"user_id": gone})
    finally:
        stop_api(process)
    assert body["as_of"] == "2024-01-31" and body["online_as_of"] == "2024-03-31"
    assert body["stale"] is True
    # 60 days old: past every view's 31-day ttl.
    assert body["expired_feature_views"] == sorted(body["feature_views"])
    assert refused.status_code == 409 and "is stale" in refused.json()["detail"]


def test_the_apis_row_encoding_scores_exactly_as_the_pipeline(modelled):
    """/predict encodes a feature dict straight into the model's input (no DataFrame): every row
    of a month, plus unknown categories and empty values, scores exactly as the pipeline does."""
    reg = registry(modelled)
    model = load(reg, reg.current_champion())
    month = pd.read_csv(training_path(modelled.output, "2024-03"))
    records = [
        {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in r.items()}
        for r in month[model.features.names].to_dict("records")
    ]
    odd = dict(records[0], net_service="Satellite", tenure_bucket=None, monthly_fee=None)
    records += [odd, dict.fromkeys(model.features.names)]
    through_api = np.concatenate(
        [model.score(records[i : i + 7]) for i in range(0, len(records), 7)]
    )
    np.testing.assert_array_equal(through_api, model.score(pd.DataFrame(records)))


def _model_files(reg: Registry, version: int) -> list[Path]:
    uri = reg.client.get_model_version_download_uri(MODEL_NAME, str(version))
    folder = Path(uri.removeprefix("file://"))
    return [p for p in folder.rglob("model.*") if p.is_file()]


def test_a_corrupted_artifact_is_named_and_the_loaded_champion_keeps_serving(modelled):
    from streamflow_assets.serving.app import Models, NotReady

    reg = registry(modelled)
    settings = Settings.from_env()
    champion = reg.current_champion()
    models = Models(settings)
    serving = models.champion()
    other = other_version(reg, champion)
    files = _model_files(reg, champion.version) + _model_files(reg, other.version)
    assert files, "the model's artifact files"
    saved = {f: f.read_bytes() for f in files}
    try:
        for f in files:
            f.write_bytes(b"not a model")
        with pytest.raises(RegistryError, match=rf"{MODEL_NAME} v{champion.version} .* cannot be"):
            load(reg, champion)
        # A new champion that cannot be loaded: the one already loaded keeps serving.
        reg.client.set_registered_model_alias(MODEL_NAME, "champion", str(other.version))
        models._checked = float("-inf")  # look the alias up again now
        assert models.champion() is serving
        # A process with nothing loaded yet says which version it could not load.
        with pytest.raises(NotReady, match=rf"{MODEL_NAME} v{other.version} .* cannot be"):
            Models(settings).champion()
        scored = modelled.materialize(champion.partition, "churn_scores")
        assert not scored.success
        assert f"{champion.label} cannot be loaded from" in failure_text(scored)
    finally:
        for f, data in saved.items():
            f.write_bytes(data)
        reg.point_alias()


def test_an_unreachable_tracking_store_is_named(modelled, monkeypatch):
    monkeypatch.setenv("STREAMFLOW_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/nowhere")
    with pytest.raises(RegistryError, match=r"MLflow store at .*127\.0\.0\.1:1/nowhere"):
        Registry(Settings.from_env())


# ---- a candidate that loses, and months loaded in any order ---------------------------------


@pytest.fixture(scope="module")
def drifting_drops(seed_drops: Path, tmp_path_factory) -> Path:
    """The seed drops with February's labels shuffled: no model can predict them."""
    out = tmp_path_factory.mktemp("drifting") / "drops"
    shutil.copytree(seed_drops, out)
    labels = out / "month_001" / "labels.csv"
    frame = pd.read_csv(labels, dtype=str, keep_default_na=False)
    frame["churn_label"] = np.random.default_rng(3).permutation(frame["churn_label"].to_numpy())
    frame.to_csv(labels, index=False)
    return out


def test_a_losing_candidate_leaves_the_month_green_and_the_champion_in_place(
    server_url, drifting_drops, monkeypatch
):
    url = create_database(server_url)
    warehouse = Warehouse(url, drifting_drops, monkeypatch)
    try:
        warehouse.load("2024-01")
        january = registry(warehouse).current_champion()
        assert january is not None and january.partition == "2024-01"
        result = warehouse.materialize("2024-02")
        assert result.success, failure_text(result)
        assert check_evaluations(result)["beats_baselines"] is False
        reg = registry(warehouse)
        assert not reg.decisions()["2024-02"].promoted
        assert reg.current_champion() == january
        scores = warehouse.frame("SELECT DISTINCT model_version FROM churn_scores")
        assert scores["model_version"].tolist() == [january.label]
    finally:
        warehouse.engine.dispose()
        drop_database(server_url, url)


class Automation:
    """Declarative automation as the daemon runs it, evaluated by hand: each `tick()` evaluates
    the conditions and runs what they request, until they request nothing."""

    def __init__(self, warehouse: Warehouse):
        self.warehouse = warehouse
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursor = None
        self.evaluations = self.runs = 0
        self.tick()  # automation is on before the first month arrives

    def load(self, partition: str) -> None:
        self.warehouse.load(partition, instance=self.instance)
        self.tick()

    def tick(self) -> None:
        for _ in range(20):
            self.warehouse.activate()
            evaluation = dg.evaluate_automation_conditions(
                defs=defs, instance=self.instance, cursor=self.cursor
            )
            self.cursor, self.evaluations = evaluation.cursor, self.evaluations + 1
            if evaluation.total_requested == 0:
                return
            requested: dict[str, list[str]] = {}
            for key in MODEL_GROUP.resolve(defs.resolve_asset_graph()):
                for partition in evaluation.get_requested_partitions(key):
                    requested.setdefault(partition, []).append(key.to_user_string())
            for partition in sorted(requested):
                self.warehouse.load(
                    partition, selection=requested[partition], instance=self.instance
                )
                self.runs += 1
        raise AssertionError("automation did not settle in 20 evaluations")


def outcome(warehouse: Warehouse) -> tuple:
    reg = registry(warehouse)
    decisions = reg.decisions()
    champion = reg.current_champion()
    scores = warehouse.frame("SELECT user_id, as_of, score, model_version FROM churn_scores")
    # Version numbers count registrations, which differ between orders: compare the months.
    scores["model_version"] = scores["model_version"].str.extract(r"\((\d{4}-\d{2})\)")[0]
    return (
        {p: (d.training_months, d.promoted) for p, d in decisions.items()},
        champion.partition if champion else None,
        scores.sort_values(["as_of", "user_id"]).reset_index(drop=True),
    )


def test_months_loaded_in_either_order_converge_under_automation(new_warehouse):
    in_order, shuffled = new_warehouse(), new_warehouse()
    results = []
    for warehouse, order in ((in_order, MONTHS), (shuffled, ("2024-03", "2024-01", "2024-02"))):
        automation = Automation(warehouse)
        for partition in order:
            automation.load(partition)
        results.append(outcome(warehouse))
        print(f"order {order}: {automation.evaluations} evaluations, {automation.runs} runs")
    (decisions_a, champion_a, scores_a), (decisions_b, champion_b, scores_b) = results
    assert decisions_a == decisions_b
    assert decisions_a["2024-03"][0] == ["2024-01", "2024-02"]
    assert champion_a == champion_b
    pd.testing.assert_frame_equal(scores_a, scores_b)


def test_a_stale_month_is_retrained_by_materializing_it_and_what_follows(new_warehouse):
    warehouse = new_warehouse()
    warehouse.load("2024-02", "2024-01")
    assert registry(warehouse).decisions()["2024-02"].training_months == ["2024-02"]
    warehouse.load("2024-02", selection=MODEL_GROUP)
    assert registry(warehouse).decisions()["2024-02"].training_months == ["2024-01"]


def test_a_model_without_its_training_csv_fails_and_registers_nothing(new_warehouse):
    warehouse = new_warehouse()
    result = warehouse.materialize("2024-01", "churn_model")
    assert not result.success
    text = failure_text(result)
    assert "training_df_2024-01-31.csv is missing" in text
    assert "materialize training_dataset for 2024-01" in text
    assert registry(warehouse).decisions() == {}


def test_scores_without_a_model_for_the_month_fail_and_change_no_scores(new_warehouse):
    warehouse = new_warehouse()
    warehouse.load("2024-01")
    before = warehouse.frame("SELECT * FROM churn_scores ORDER BY as_of, user_id")
    warehouse.load("2024-02", selection=dg.AssetSelection.all() - MODEL_GROUP)
    result = warehouse.materialize("2024-02", "churn_scores")
    assert not result.success
    assert "no churn_model for 2024-02: materialize churn_model first" in failure_text(result)
    pd.testing.assert_frame_equal(
        warehouse.frame("SELECT * FROM churn_scores ORDER BY as_of, user_id"), before
    )


def test_the_cli_prints_the_tracking_uri(modelled):
    import subprocess
    import sys

    modelled.activate()
    result = subprocess.run(
        [sys.executable, "-m", "streamflow_assets.cli", "mlflow", "uri"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    uri = result.stdout.strip()
    assert uri == registry(modelled).uri
    assert uri.startswith("postgresql+psycopg://") and "search_path%3Dmlflow" in uri


TRAINING_LIKE_COLUMNS = {
    "user_id": pa.string(),
    "event_timestamp": pa.timestamp("us", tz="UTC"),
    "net_service": pa.string(),
    "contract_code": pa.string(),
    "tenure_months": pa.int64(),
    "monthly_fee": pa.float64(),
    "is_auto_pay": pa.bool_(),
    "churn_label": pa.bool_(),
}


def write_training_like_csv(path: Path, users: range) -> None:
    """A CSV shaped like a training set: strings (one of digits), an integer, a float written
    without decimals in the first rows (as Arrow writes 12.0), a boolean with empty values, and
    a column the declared columns do not name."""
    pd.DataFrame(
        {
            "user_id": [f"{i:04d}-USER" for i in users],
            "event_timestamp": "2024-01-31 00:00:00.000000Z",
            "net_service": ["fiber" if i % 3 else None for i in users],
            "contract_code": [str(i % 3) for i in users],
            "tenure_months": [i % 72 for i in users],
            "monthly_fee": [str(i % 90) if i < 3000 else f"{i % 90}.25" for i in users],
            "is_auto_pay": [None if i % 7 == 0 else bool(i % 2) for i in users],
            "churn_label": [i % 4 == 0 for i in users],
            "retired_feature": "no longer declared",
        }
    ).to_csv(path, index=False)


@pytest.mark.parametrize("line", [5, 90], ids=["first block", "a later block"])
def test_a_training_csv_value_that_is_not_its_declared_type_names_the_file(
    tmp_path, monkeypatch, line
):
    monkeypatch.setattr(training, "CSV_READ_BYTES", 2_000)  # ~25 rows a block
    path = tmp_path / "training.csv"
    write_training_like_csv(path, range(0, 100))
    lines = path.read_text().splitlines()
    fields = lines[line].split(",")
    fields[5] = "fifty"  # monthly_fee, a float
    lines[line] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as raised:
        list(training.read_training_chunks(path, TRAINING_LIKE_COLUMNS))
    message = str(raised.value)
    assert str(path) in message and "#5 monthly_fee" in message and "'fifty'" in message


def test_a_training_sample_is_seeded_uniform_and_read_a_chunk_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "CSV_CHUNK_ROWS", 700)
    monkeypatch.setattr(training, "CSV_READ_BYTES", 50_000)  # Arrow's blocks: ~630 rows
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    write_training_like_csv(first, range(0, 6000))
    write_training_like_csv(second, range(6000, 10000))
    columns = TRAINING_LIKE_COLUMNS

    # No more rows than asked for: every row of the file.
    whole = read_training_sample([first], columns, 10_000, seed=7)
    expected = pd.read_csv(first, dtype={"user_id": str})
    assert whole["user_id"].tolist() == expected["user_id"].tolist()
    assert whole["is_auto_pay"].dtype == "float64"  # every chunk alike, empty values NaN
    assert whole["churn_label"].dtype == "float64"  # a bool column too
    pd.testing.assert_series_equal(
        whole["is_auto_pay"], expected["is_auto_pay"].map({True: 1.0, False: 0.0})
    )
    # A float column read as declared, though its first blocks look like integers.
    assert whole["monthly_fee"].dtype == "float64"
    assert whole["monthly_fee"].tolist() == expected["monthly_fee"].tolist()
    assert whole["tenure_months"].tolist() == expected["tenure_months"].tolist()
    assert whole["net_service"].dtype == object
    assert whole["contract_code"].tolist() == [str(i % 3) for i in range(6000)]  # a category
    assert whole["net_service"].isna().tolist() == expected["net_service"].isna().tolist()
    assert whole["event_timestamp"].tolist() == expected["event_timestamp"].tolist()
    assert list(whole.columns) == list(TRAINING_LIKE_COLUMNS)  # retired_feature left out

    sample = read_training_sample([first, second], columns, 1000, seed=7)
    ids = sample["user_id"].tolist()
    assert len(ids) == len(set(ids)) == 1000
    assert ids == sorted(ids)  # in file order
    numbers = sample["user_id"].str[:4].astype(int)
    # Uniform over both files together: 60% of the rows are the first file's.
    assert 540 <= (numbers < 6000).sum() <= 660
    # Each sampled row is the file's row, unchanged.
    rows = pd.concat([pd.read_csv(f, dtype={"user_id": str}) for f in (first, second)])
    rows = rows.set_index("user_id")
    assert (rows.loc[ids, "tenure_months"].to_numpy() == sample["tenure_months"]).all()
    assert read_training_sample([first, second], columns, 1000, seed=7).equals(sample)
    assert read_training_sample([first, second], columns, 1000, seed=8)["user_id"].tolist() != ids
