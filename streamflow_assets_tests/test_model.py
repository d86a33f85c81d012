"""The churn model on generated drops: temporal hold-out, baselines, card, scores, /predict."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import httpx
import pandas as pd
import pytest

from streamflow_assets.feature_store.repo import FEATURE_SERVICE, feature_store
from streamflow_assets.model import model_dir
from streamflow_assets.settings import Settings
from streamflow_assets_tests.conftest import (
    SEED_USERS,
    Warehouse,
    create_database,
    drop_database,
    failure_text,
    materialization,
    start_api,
    stop_api,
)


@pytest.fixture(scope="module")
def modelled(server_url, seed_drops) -> Iterator[Warehouse]:
    """Three months through the whole graph, models included."""
    url = create_database(server_url)
    with pytest.MonkeyPatch.context() as patch:
        warehouse = Warehouse(url, seed_drops, patch)
        warehouse.load("2024-01", "2024-02", "2024-03")
        yield warehouse
        warehouse.engine.dispose()
    drop_database(server_url, url)


def card(warehouse: Warehouse, partition: str) -> dict:
    return json.loads((model_dir(warehouse.output, partition) / "model.json").read_text())


def test_the_model_beats_the_majority_class_on_the_hold_out_month(modelled):
    march = card(modelled, "2024-03")
    assert march["training_months"] == ["2024-01", "2024-02"]
    assert march["holdout"] == "month 2024-03"
    majority = march["baselines"]["majority class"]
    assert march["metrics"]["roc_auc"] > 0.6 > majority["roc_auc"]
    assert march["metrics"]["log_loss"] < majority["log_loss"]
    assert set(march["baselines"]) == {"majority class", "logistic regression"}


def test_the_first_month_trains_on_80_percent_of_its_users(modelled):
    january = card(modelled, "2024-01")
    assert january["training_months"] == ["2024-01"]
    assert "20%" in january["holdout"]
    assert january["metrics"]["test_rows"] == SEED_USERS // 5
    assert january["metrics"]["train_rows"] == SEED_USERS - SEED_USERS // 5


def test_the_card_names_the_feature_service_and_its_features(modelled):
    modelled.activate()
    store = feature_store(Settings.from_env())
    service = store.get_feature_service(FEATURE_SERVICE)
    served = {f.name for p in service.feature_view_projections for f in p.features}
    march = card(modelled, "2024-03")
    assert march["feature_service"] == FEATURE_SERVICE
    assert set(march["features"]["categorical"] + march["features"]["numeric"]) == served
    assert march["features"]["categorical"] == ["net_service", "tenure_bucket"]
    assert (model_dir(modelled.output, "2024-03") / "model.joblib").stat().st_size > 0


def test_the_model_metadata_explains_it(modelled):
    result = modelled.materialize("2024-03", "churn_model")
    assert result.success, failure_text(result)
    metadata = materialization(result, "churn_model").metadata
    for key in ("roc_auc", "pr_auc", "log_loss", "calibration by decile", "against baselines"):
        assert key in metadata
    assert metadata["calibration by decile"].value.count("\n") == 11  # header, rule, 10 deciles
    importance = metadata["feature importance (ROC AUC drop when shuffled)"].value
    assert "months_active" in importance


def test_scores_cover_every_user_once_per_month_and_rerun_idempotently(modelled):
    query = "SELECT * FROM churn_scores WHERE as_of = '2024-03-31' ORDER BY user_id"
    before = modelled.frame(query)
    users = modelled.frame(
        "SELECT user_id FROM labels_snapshots WHERE as_of = '2024-03-31' ORDER BY user_id"
    )
    assert before["user_id"].tolist() == users["user_id"].tolist()
    assert set(before["model_version"]) == {"churn-2024-03"}
    assert before["score"].between(0, 1).all()
    result = modelled.materialize("2024-03", "churn_scores")
    assert result.success, failure_text(result)
    pd.testing.assert_frame_equal(modelled.frame(query), before)
    assert len(modelled.frame("SELECT DISTINCT as_of FROM churn_scores")) == 3


def test_offline_and_online_scores_of_the_same_user_agree(modelled):
    """churn_scores (training CSV features, offline) and /predict (online features, over HTTP)
    give the same probability for March, the newest month online and the newest model."""
    scores = modelled.frame(
        "SELECT user_id, score FROM churn_scores WHERE as_of = '2024-03-31' ORDER BY user_id"
    ).head(25)
    modelled.activate()
    process, base = start_api(dict(os.environ))
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            for user_id, offline in scores.itertuples(index=False):
                response = client.post("/predict", json={"user_id": user_id})
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["model_version"] == "churn-2024-03"
                assert body["as_of"] == "2024-03-31"
                assert body["churn_probability"] == pytest.approx(offline, abs=1e-12)
            assert client.post("/predict", json={"user_id": "0000-ZZZZZ"}).status_code == 404
            assert client.post("/predict", json={"user_id": "nope"}).status_code == 422
            assert client.post("/predict", json={}).status_code == 422
    finally:
        stop_api(process)


def test_a_model_without_its_training_csv_fails_and_saves_nothing(new_warehouse):
    warehouse = new_warehouse()
    result = warehouse.materialize("2024-01", "churn_model")
    assert not result.success
    text = failure_text(result)
    assert "training_df_2024-01-31.csv is missing" in text
    assert "materialize training_dataset for 2024-01" in text
    assert not model_dir(warehouse.output, "2024-01").exists()


def test_scores_without_a_model_fail_and_change_no_scores(modelled):
    before = modelled.frame("SELECT * FROM churn_scores ORDER BY as_of, user_id")
    folder = model_dir(modelled.output, "2024-02")
    hidden = folder.with_name(".hidden-2024-02")  # dot: not a model to any reader meanwhile
    folder.rename(hidden)
    try:
        result = modelled.materialize("2024-02", "churn_scores")
    finally:
        hidden.rename(folder)
    assert not result.success
    assert f"no model in {folder}: materialize churn_model for 2024-02" in failure_text(result)
    pd.testing.assert_frame_equal(
        modelled.frame("SELECT * FROM churn_scores ORDER BY as_of, user_id"), before
    )
