"""The docker/ topology without containers: the code-location server, the webserver, the daemon and
the API as local processes, DAGSTER_HOME holding docker/dagster.yaml, Dagster's storage and the
warehouse in fresh databases on the test server. Plus the compose file itself, validated by
docker-compose, with every path it references present."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import httpx
import psycopg
import pytest
import yaml
from dagster_graphql import DagsterGraphQLClient

from streamflow_assets.db import libpq_url
from streamflow_assets_tests.conftest import (
    create_database,
    drop_database,
    free_port,
    start_process,
    stop_process,
    wait_for_run,
)

PROJECT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.deployment

DOCKER = PROJECT / "docker"
BIN = Path(sys.executable).parent


def test_the_deployment_topology_runs_a_month(server_url, seed_drops, tmp_path):
    warehouse, storage = create_database(server_url), create_database(server_url)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DOCKER / "dagster.yaml", home / "dagster.yaml")
    drops = tmp_path / "drops"
    # January's drop only: with February's there too, the daemon's new-drop sensor runs February
    # meanwhile, and the API serves whichever month is online when it is asked.
    shutil.copytree(seed_drops / "month_000", drops / "month_000")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": storage.host or "127.0.0.1",
        "DAGSTER_PG_PORT": str(storage.port or 5432),
        "DAGSTER_PG_DB": storage.database,
        "DAGSTER_PG_USER": storage.username or "",
        "DAGSTER_PG_PASSWORD": storage.password or "",
        "STREAMFLOW_DATABASE_URL": libpq_url(warehouse),
        "STREAMFLOW_DROPS_DIR": str(drops),
        "STREAMFLOW_OUTPUT_DIR": str(tmp_path / "processed"),
        "STREAMFLOW_FIRST_MONTH": "2024-01",
        "STREAMFLOW_AUTOMATION": "on",
    }
    if not storage.host:
        pytest.skip("the embedded server listens on a Unix socket; docker/dagster.yaml uses TCP")
    code_port, web_port, api_port = free_port(), free_port(), free_port()
    # docker/workspace.yaml, with the code server on this machine instead of the `code` service.
    workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text())
    server = workspace["load_from"][0]["grpc_server"]
    server.update(host="127.0.0.1", port=code_port)
    (tmp_path / "workspace.yaml").write_text(yaml.safe_dump(workspace))
    dagster = [sys.executable, "-m", "dagster"]
    processes = []
    try:
        processes.append(
            start_process(
                [*dagster, "code-server", "start", "-h", "127.0.0.1", "-p", str(code_port),
                 "-m", "streamflow_assets.definitions"],
                env,
                None,
                ready=lambda: _grpc_healthy(code_port, env),
            )
        )  # fmt: skip
        workspace_file = str(tmp_path / "workspace.yaml")
        processes.append(
            start_process(
                [str(BIN / "dagster-webserver"), "-h", "127.0.0.1",
                 "-p", str(web_port), "-w", workspace_file],
                env,
                f"http://127.0.0.1:{web_port}/server_info",
            )
        )  # fmt: skip
        processes.append(
            start_process(
                [str(BIN / "dagster-daemon"), "run", "-w", workspace_file],
                env,
                None,
                ready=lambda: True,
            )
        )  # fmt: skip

        client = DagsterGraphQLClient("127.0.0.1", port_number=web_port)
        run_id = client.submit_job_execution("monthly_graph", tags={"dagster/partition": "2024-01"})
        assert wait_for_run(client, run_id) == dg.DagsterRunStatus.SUCCESS

        with psycopg.connect(libpq_url(storage)) as conn:
            tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables")}
            assert {"runs", "event_logs", "jobs", "job_ticks", "instigators"} <= tables
            status = conn.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,)).fetchone()
            assert status == ("SUCCESS",)
            # The daemon ran the sensor (RUNNING by STREAMFLOW_AUTOMATION=on): its state is stored.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                ticks = conn.execute(
                    "SELECT count(*) FROM job_ticks WHERE tick_body LIKE %s",
                    ("%new_drop_sensor%",),
                ).fetchone()[0]
                if ticks:
                    break
                time.sleep(2)
            assert ticks, "the daemon recorded no tick of new_drop_sensor"

        processes.append(
            start_process(
                [sys.executable, "-m", "streamflow_assets.cli", "api", "--port", str(api_port)],
                env,
                f"http://127.0.0.1:{api_port}/openapi.json",
            )
        )
        health = httpx.get(f"http://127.0.0.1:{api_port}/health", timeout=30).json()
        assert health["online_month"] == "2024-01"
        user = _first_user(drops)
        features = httpx.get(f"http://127.0.0.1:{api_port}/features/{user}", timeout=30)
        assert features.status_code == 200 and features.json()["as_of"] == "2024-01-31"
    finally:
        for process in reversed(processes):
            stop_process(process)
        for process in processes:
            assert process.poll() is not None
        drop_database(server_url, warehouse)
        drop_database(server_url, storage)


def _first_user(drops: Path) -> str:
    with (drops / "month_000" / "users.csv").open() as f:
        f.readline()
        return f.readline().split(",")[0]


def _grpc_healthy(port: int, env: dict[str, str]) -> bool:
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "api", "grpc-health-check", "-p", str(port)],
        env=env,
        capture_output=True,
        timeout=30,
    )
    return result.returncode == 0


# ---- the compose file ---------------------------------------------------------------------------


def test_compose_file_is_valid_and_its_paths_exist(tmp_path):
    docker_compose = shutil.which("docker-compose")
    if docker_compose is None:
        pytest.fail("docker-compose is missing: `make compose` installs Debian's docker-compose")
    env_file = DOCKER / ".env"
    made = not env_file.exists()
    if made:
        shutil.copy(DOCKER / ".env.example", env_file)
    try:
        result = subprocess.run(
            [docker_compose, "-f", str(DOCKER / "compose.yaml"), "config"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        if made:
            env_file.unlink()
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert set(resolved["services"]) == {"postgres", "redis", "code", "webserver", "daemon", "api"}
    assert resolved["services"]["postgres"]["image"] == "postgres:16"
    # Redis only when asked for: its profile, and the online store variable, default PostgreSQL.
    assert resolved["services"]["redis"]["profiles"] == ["redis"]
    assert resolved["services"]["api"]["environment"]["STREAMFLOW_ONLINE_STORE"] == "postgres"
    assert "healthcheck" in resolved["services"]["postgres"]

    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    build = compose["services"]["code"]["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).is_file()
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{source} (a volume of compose.yaml)"
    for line in (DOCKER / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (PROJECT / source).exists(), f"{source} (COPY in the Dockerfile)"


def test_no_secret_is_committed():
    example = (DOCKER / ".env.example").read_text()
    assert "POSTGRES_PASSWORD=change-me" in example
    for path in DOCKER.iterdir():
        if path.name in (".env.example", ".env"):
            continue
        assert "change-me" not in path.read_text(), path
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(DOCKER / ".env")], cwd=PROJECT, check=False
    )
    assert ignored.returncode == 0, "docker/.env must be git-ignored"
