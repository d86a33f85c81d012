"""The Dagster UI and the Feast UI in a real browser (Debian's chromium driven by Playwright), and
a month launched through the webserver's GraphQL API.

`dagster dev` runs on a loopback port against a test database whose first two months were
materialized into the same DAGSTER_HOME, so the UI has partitions and check results to show.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster_graphql import DagsterGraphQLClient
from playwright.sync_api import Page, expect, sync_playwright

from streamflow_assets.db import libpq_url
from streamflow_assets.runs import materialize_month
from streamflow_assets_tests.conftest import (
    create_database,
    drop_database,
    failure_text,
    free_port,
    start_api,
    start_process,
    stop_api,
    stop_process,
    wait_for_run,
)

pytestmark = pytest.mark.browser

PROJECT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("STREAMFLOW_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("STREAMFLOW_TEST_ARTIFACTS", PROJECT / "test-artifacts"))


@pytest.fixture(scope="module")
def ui_env(server_url, seed_drops, tmp_path_factory) -> Iterator[dict[str, str]]:
    """A database with 2024-01 and 2024-02 materialized, recorded in a DAGSTER_HOME of its own."""
    url = create_database(server_url)
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    drops = tmp_path_factory.mktemp("drops") / "seeds"
    shutil.copytree(seed_drops, drops)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "STREAMFLOW_DATABASE_URL": libpq_url(url),
        "STREAMFLOW_DROPS_DIR": str(drops),
        "STREAMFLOW_OUTPUT_DIR": str(tmp_path_factory.mktemp("processed")),
        "STREAMFLOW_FIRST_MONTH": "2024-01",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        instance = dg.DagsterInstance.get()
        for partition in ("2024-01", "2024-02"):
            result = materialize_month(partition, instance=instance)
            assert result.success, failure_text(result)
        instance.dispose()
    yield env
    drop_database(server_url, url)


@pytest.fixture(scope="module")
def dagster_ui(ui_env) -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "dagster", "dev", "-m", "streamflow_assets.definitions",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    process = start_process(command, ui_env, f"{base}/server_info")
    yield base
    stop_process(process)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1800, "height": 2100})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()


def open_page(page: Page, url: str) -> None:
    page.goto(url)
    # First visit: Dagster asks to join its community; a person would press Skip.
    skip = page.get_by_role("button", name="Skip")
    with contextlib.suppress(Exception):
        skip.wait_for(timeout=8_000)
        skip.click()


def test_asset_graph_shows_the_five_groups(dagster_ui, page):
    open_page(page, f"{dagster_ui}/asset-groups")
    graph = page.locator("foreignObject")
    for group in ("ingestion", "snapshots", "feature_store", "training", "model"):
        expect(graph.filter(has_text=group).first).to_be_visible()
    # Every group expanded (graph settings, "Expand all groups", ⌥E), zoomed out to fit.
    page.keyboard.press("Alt+e")
    expect(graph.filter(has_text="training_dataset").first).to_be_visible()
    zoom_out = page.locator("button:has([aria-label='zoom_out'])")
    for _ in range(2):
        zoom_out.click()
    for asset in ("users", "labels_snapshots", "feast_registry", "online_features", "churn_model"):
        expect(graph.filter(has_text=asset).first).to_be_visible()
    page.wait_for_timeout(1_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "asset_graph.png")


def test_a_partitioned_asset_shows_its_months_and_checks(dagster_ui, page):
    open_page(page, f"{dagster_ui}/assets/users?view=partitions")
    expect(page.get_by_text("Materialized (2)")).to_be_visible()
    for partition in ("2024-01", "2024-02", "2024-03"):
        expect(page.get_by_text(partition, exact=True).first).to_be_visible()
    open_page(page, f"{dagster_ui}/assets/users?view=checks")
    for check in ("file_format", "values_parse", "user_ids", "allowed_values"):
        expect(page.get_by_text(check, exact=True).first).to_be_visible()
    expect(page.get_by_text("Succeeded").first).to_be_visible()
    expect(page.get_by_text("This is a blocking asset check.")).to_be_visible()


def test_the_training_set_shows_its_check_results_and_path(dagster_ui, page):
    open_page(page, f"{dagster_ui}/assets/training_dataset?view=checks")
    for check in ("one_row_per_snapshot_user", "no_unexpected_null_feature", "label_rate_in_range"):
        expect(page.get_by_text(check, exact=True).first).to_be_visible()
    open_page(page, f"{dagster_ui}/assets/training_dataset")
    expect(page.get_by_text("training_df_2024-02-29.csv").first).to_be_visible()


def test_a_month_launched_through_graphql_succeeds(dagster_ui):
    port = int(dagster_ui.rsplit(":", 1)[1])
    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    run_id = client.submit_job_execution("monthly_graph", tags={"dagster/partition": "2024-03"})
    status = wait_for_run(client, run_id)
    assert status == dg.DagsterRunStatus.SUCCESS


def test_the_feast_ui_lists_the_feature_views(ui_env, page):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "streamflow_assets.cli", "feast-ui", "--port", str(port)]
    process = start_process(command, ui_env, f"{base}/projects-list.json")
    try:
        page.goto(f"{base}/p/streamflow/feature-view")
        for view in ("subs_profile_fv", "usage_agg_30d_fv", "payments_agg_90d_fv",
                     "support_agg_90d_fv"):  # fmt: skip
            expect(page.get_by_text(view, exact=True).first).to_be_visible()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=ARTIFACTS / "feast_ui.png")
    finally:
        stop_process(process)


def test_the_api_docs_render_with_no_network_route(ui_env, page):
    process, base = start_api(ui_env)
    outside: list[str] = []

    def local_only(route) -> None:
        if route.request.url.startswith(base):
            route.continue_()
        else:
            outside.append((route.request.resource_type, route.request.url))
            route.abort()

    try:
        page.route("**/*", local_only)
        page.goto(f"{base}/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text(
            "StreamFlow online features"
        )
        expect(page.get_by_text("/features/{user_id}").first).to_be_visible()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=ARTIFACTS / "api_docs.png")
        page.goto(f"{base}/redoc")
        expect(page.get_by_role("heading", name="StreamFlow online features")).to_be_visible()
        expect(page.get_by_text("/predict", exact=True).first).to_be_attached()
    finally:
        stop_api(process)
    # Everything the pages need is served locally; ReDoc's footer asks its CDN for its own logo
    # (an image the pages render without).
    needed = [(kind, url) for kind, url in outside if kind != "image"]
    assert needed == [], f"the docs asked the internet for {needed}"
