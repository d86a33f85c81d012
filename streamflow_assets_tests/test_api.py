"""The online feature API over real HTTP: a `streamflow api` server process on a loopback port,
a real online store filled by the asset graph, httpx as the client, schemathesis for the spec."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pandas as pd
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from prometheus_client.parser import text_string_to_metric_families

from streamflow_assets.db import libpq_url
from streamflow_assets.feature_store.repo import FEATURE_SERVICE, feature_store
from streamflow_assets.model_registry import Registry
from streamflow_assets.serving.app import EXAMPLE_USER, EXAMPLE_USERS
from streamflow_assets.settings import Settings
from streamflow_assets_tests.conftest import (
    Warehouse,
    create_database,
    drop_database,
    read_month,
    start_api,
    stop_api,
    while_rematerializing_online,
)


@pytest.fixture(scope="module", params=["postgres", "redis"])
def served(request, server_url, seed_drops) -> Iterator[tuple[str, Warehouse]]:
    """Months 1 and 2 through the whole graph, and an API server process over them; online in
    PostgreSQL, then in Redis."""
    leases = contextlib.ExitStack()
    online = None
    if request.param == "redis":
        online = leases.enter_context(request.getfixturevalue("redis_databases").lease())
    url = create_database(server_url)
    with leases, pytest.MonkeyPatch.context() as patch:
        warehouse = Warehouse(url, seed_drops, patch, online)
        warehouse.load("2024-01", "2024-02")
        process, base = start_api(dict(os.environ))
        try:
            yield base, warehouse
        finally:
            stop_api(process)
            warehouse.engine.dispose()
            drop_database(server_url, url)


@pytest.fixture
def api(served) -> Iterator[httpx.Client]:
    base, _ = served
    with httpx.Client(base_url=base, timeout=30) as client:
        yield client


def test_health_names_the_month_online_and_the_champion(api, served):
    _, warehouse = served
    warehouse.activate()
    champion = Registry(Settings.from_env()).current_champion()
    response = api.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "online_month": "2024-02",
        "feature_service": "churn_features",
        "champion": champion.label if champion else None,
    }


def test_a_user_gets_the_newest_months_values(api, seed_drops):
    february = read_month(seed_drops, 1, "subscriptions").set_index("user_id")
    usage = read_month(seed_drops, 1, "usage_agg_30d").set_index("user_id")
    for user_id in february.index[:5]:
        response = api.get(f"/features/{user_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["user_id"] == user_id
        assert body["as_of"] == "2024-02-29"
        assert set(body["feature_views"].values()) == {"2024-02-29"}
        features = body["features"]
        assert features["months_active"] == int(february.loc[user_id, "months_active"])
        assert features["monthly_fee"] == float(february.loc[user_id, "monthly_fee"])
        assert features["net_service"] == february.loc[user_id, "net_service"]
        assert features["watch_hours_30d"] == float(usage.loc[user_id, "watch_hours_30d"])
        assert {"fee_per_watch_hour", "tenure_bucket", "tickets_per_active_month"} <= set(features)
        assert body["online_as_of"] == "2024-02-29"
        assert body["stale"] is False and body["expired_feature_views"] == []


def test_a_user_who_left_keeps_their_last_months_values(api, seed_drops):
    january = read_month(seed_drops, 0, "subscriptions").set_index("user_id")
    february = read_month(seed_drops, 1, "subscriptions").set_index("user_id")
    left = sorted(set(january.index) - set(february.index))[0]
    body = api.get(f"/features/{left}").json()
    assert body["as_of"] == "2024-01-31"
    assert body["features"]["months_active"] == int(january.loc[left, "months_active"])
    # Served, and flagged: not in the newest month online; a month old is within the views' ttl.
    assert body["online_as_of"] == "2024-02-29"
    assert body["stale"] is True and body["expired_feature_views"] == []
    refused = api.post("/predict", json={"user_id": left})
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"user {left} is stale: their newest values are from 2024-01-31, the newest month online "
        "ends 2024-02-29 (not in that month's drop); not scored"
    )


def test_the_docs_examples_are_users_of_the_sample(tmp_path):
    from streamflow_assets.cli import SAMPLE_MONTHS, SAMPLE_SEED, SAMPLE_USERS
    from streamflow_assets.generator import generate_drops

    folders = generate_drops(
        tmp_path, users=SAMPLE_USERS, months=SAMPLE_MONTHS, seed=SAMPLE_SEED, dynamic=True
    )
    for folder in folders:
        users = set(pd.read_csv(folder / "users.csv", usecols=["user_id"])["user_id"])
        assert set(EXAMPLE_USERS) <= users, folder.name


def test_unknown_user_is_404_not_a_body_of_nulls(api):
    response = api.get("/features/0000-ZZZZZ")
    assert response.status_code == 404
    assert response.json() == {"detail": "user 0000-ZZZZZ is not in the online store"}


@pytest.mark.parametrize("bad", ["bad", "7590-vhveg", "75900-VHVEG", "7590_VHVEG", "7590-VHVEG1"])
def test_malformed_user_id_is_422(api, bad):
    response = api.get(f"/features/{bad}")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "user_id"]


def test_batch_lists_unknown_ids_separately_and_answers_repeats_once(api, seed_drops):
    known = list(read_month(seed_drops, 1, "users")["user_id"][:3])
    response = api.post(
        "/features", json={"user_ids": [known[0], "0000-ZZZZZ", known[1], known[0], known[2]]}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [u["user_id"] for u in body["users"]] == known
    assert body["unknown_user_ids"] == ["0000-ZZZZZ"]


@pytest.mark.parametrize(
    "payload",
    [
        {"user_ids": []},
        {"user_ids": ["bad"]},
        {"user_ids": [f"{i:04d}-AAAAA" for i in range(1001)]},
        {"ids": ["7590-VHVEG"]},
    ],
    ids=["empty", "malformed", "over 1000", "wrong field"],
)
def test_bad_batch_is_422(api, payload):
    assert api.post("/features", json=payload).status_code == 422


def test_every_answer_is_what_feast_reads(api, served, seed_drops):
    """Every user of the two months, answered by one batch, against Feast's own reading of the
    same users (`get_online_features(...).to_dict()`): each value with its type, each view's
    month, the same users known — the API reads Feast's response its own faster way."""
    _, warehouse = served
    warehouse.activate()
    users = sorted(
        set(read_month(seed_drops, 0, "users")["user_id"])
        | set(read_month(seed_drops, 1, "users")["user_id"])
    )
    body = api.post("/features", json={"user_ids": users}).json()
    store = feature_store(Settings.from_env())
    service = store.get_feature_service(FEATURE_SERVICE)
    feast = store.get_online_features(
        features=service, entity_rows=[{"user_id": u} for u in users]
    ).to_dict(include_event_timestamps=True)
    on_demand = {v.name for v in store.list_on_demand_feature_views()}
    views = {p.name: p.features[0].name for p in service.feature_view_projections}
    answered = {u["user_id"]: u for u in body["users"]}
    assert body["unknown_user_ids"] == [] and sorted(answered) == users
    for i, user in enumerate(users):
        features = answered[user]["features"]
        assert set(features) == set(feast) - {"user_id"} - {k for k in feast if k.endswith("__ts")}
        for name, value in features.items():
            expected = feast[name][i]
            assert value == expected and type(value) is type(expected), (user, name, value)
        months = {
            view: datetime.fromtimestamp(feast[f"{feature}__ts"][i], UTC).date().isoformat()
            for view, feature in views.items()
            if view not in on_demand and feast[f"{feature}__ts"][i]
        }
        assert answered[user]["feature_views"] == months, user
    # Users who left in February (their January values) are among them.
    assert len({u["as_of"] for u in answered.values()}) == 2


def test_a_full_batch_of_1000_is_answered(api, seed_drops):
    known = list(read_month(seed_drops, 1, "users")["user_id"])
    ids = known + [f"{i:04d}-QQQQQ" for i in range(1000 - len(known))]
    body = api.post("/features", json={"user_ids": ids}).json()
    assert len(body["users"]) == len(known)
    assert len(body["unknown_user_ids"]) == 1000 - len(known)


def test_openapi_docs_are_served_with_examples(api):
    assert api.get("/docs").status_code == 200
    spec = api.get("/openapi.json").json()
    assert {"/health", "/features/{user_id}", "/features"} <= set(spec["paths"])
    parameter = spec["paths"]["/features/{user_id}"]["get"]["parameters"][0]
    assert parameter["schema"]["examples"] == [EXAMPLE_USER]
    batch = spec["components"]["schemas"]["BatchRequest"]["properties"]["user_ids"]
    assert batch["maxItems"] == 1000 and batch["examples"]


def test_answers_while_a_month_is_materialized(served):
    base, warehouse = served
    user_id = warehouse.frame(
        "SELECT min(user_id) AS u FROM subscriptions_profile_snapshots WHERE as_of = '2024-02-29'"
    ).u[0]
    statuses = []

    def hammer(done):
        with httpx.Client(base_url=base, timeout=30) as client:
            while not done.is_set():
                response = client.get(f"/features/{user_id}")
                statuses.append((response.status_code, response.json().get("as_of")))

    while_rematerializing_online(warehouse, hammer)
    assert len(statuses) > 10
    assert set(statuses) == {(200, "2024-02-29")}


def test_health_is_503_with_the_reason_before_anything_is_applied(server_url):
    url = create_database(server_url)
    env = {**os.environ, "STREAMFLOW_DATABASE_URL": libpq_url(url)}
    process, base = start_api(env)
    try:
        health = httpx.get(f"{base}/health", timeout=30)
        assert health.status_code == 503
        assert "feast_registry" in health.json()["detail"]
        assert httpx.get(f"{base}/features/7590-VHVEG", timeout=30).status_code == 503
        predict = httpx.post(f"{base}/predict", json={"user_id": "7590-VHVEG"}, timeout=30)
        assert predict.status_code == 503
    finally:
        stop_api(process)
        drop_database(server_url, url)


def test_no_generated_input_gets_a_server_error(served):
    """Schemathesis generates valid and invalid requests for every operation of the OpenAPI
    spec and checks each response: no 5xx, status codes and bodies as the spec says.
    (Its pytest plugin does not load under pytest 9 yet, so the cases are driven by hand.)"""
    base, _ = served
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == {
        "GET /health",
        "GET /features/{user_id}",
        "POST /features",
        "POST /predict",
    }
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate()

        check()


def test_a_body_over_the_limit_is_413_and_not_read(api):
    response = api.post(
        "/features",
        content=b'{"user_ids": ["' + b"A" * 50_000_000 + b'"]}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json() == {"detail": "request body larger than 65,536 bytes"}


def test_a_chunked_body_over_the_limit_is_413(api):
    def chunks():
        yield b'{"user_ids": ["'
        for _ in range(100):
            yield b"A" * 1024
        yield b'"]}'

    response = api.post("/features", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_a_422_quotes_only_a_prefix_of_a_huge_value(api):
    huge = "7" * 60_000  # under the body limit, far over any user_id
    response = api.post("/predict", json={"user_id": huge})
    assert response.status_code == 422
    assert len(response.content) < 1_000
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "user_id"]
    assert error["input"] == "7" * 40 + "... (60,000 characters)"


def metric_samples(client: httpx.Client) -> dict[tuple, float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def counted(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_by_endpoint_and_status(api, served, seed_drops):
    user = read_month(seed_drops, 1, "users")["user_id"].iloc[0]
    before = metric_samples(api)
    for _ in range(3):
        assert api.get(f"/features/{user}").status_code == 200
    assert api.get("/features/0000-ZZZZZ").status_code == 404
    assert api.get("/health").status_code == 200
    after = metric_samples(api)

    ok = {"endpoint": "/features/{user_id}", "method": "GET", "status": "200"}
    missing = {**ok, "status": "404"}
    assert (
        counted(after, "streamflow_api_requests_total", **ok)
        - counted(before, "streamflow_api_requests_total", **ok)
        == 3
    )
    assert (
        counted(after, "streamflow_api_requests_total", **missing)
        - counted(before, "streamflow_api_requests_total", **missing)
        == 1
    )
    latency = "streamflow_api_request_seconds_count"
    assert counted(after, latency, **ok) - counted(before, latency, **ok) == 3
    reads = "streamflow_online_read_seconds_count"
    assert counted(after, reads) - counted(before, reads) == 4
    # The champion /health names is the one the metrics say is served.
    champion = api.get("/health").json()["champion"]
    served_versions = {
        dict(labels)["version"]: value
        for (name, labels), value in after.items()
        if name == "streamflow_champion_info"
    }
    assert {v for v, value in served_versions.items() if value == 1} == (
        {champion} if champion else set()
    )


def test_metrics_add_up_the_workers(served, seed_drops):
    _, warehouse = served
    warehouse.activate()  # its online store too
    users = list(read_month(seed_drops, 1, "users")["user_id"].iloc[:5])
    process, base = start_api(dict(os.environ), "--workers", "2")
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            for _ in range(8):
                for user in users:
                    assert client.get(f"/features/{user}").status_code == 200
            samples = metric_samples(client)
    finally:
        stop_api(process)
    ok = {"endpoint": "/features/{user_id}", "method": "GET", "status": "200"}
    # Whichever worker answered the scrape, every worker's requests are in it.
    assert counted(samples, "streamflow_api_requests_total", **ok) == 40
