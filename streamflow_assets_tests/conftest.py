"""Test harness: a fresh PostgreSQL database per test session.

The database is created on the server of STREAMFLOW_TEST_DATABASE_URL when it is set (CI points it
at the machine's local server), else on an embedded PostgreSQL kept under a test home of its own,
so the tests never touch the developer's `.streamflow` server.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import httpx
import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from streamflow_assets.db import get_engine, libpq_url
from streamflow_assets.embedded import ensure_server, running_server, stop_server
from streamflow_assets.generator import generate_drops
from streamflow_assets.runs import materialize_month
from streamflow_assets.settings import Settings, parse_database_url
from streamflow_assets.warehouse import DROPS_SCHEMA, STAGING_SCHEMA

TEST_URL_VAR = "STREAMFLOW_TEST_DATABASE_URL"
TEST_REDIS_VAR = "STREAMFLOW_TEST_REDIS_URL"
"""The Redis server the Redis online-store tests use (default the machine's, 127.0.0.1:6379);
they take database numbers 8 to 15 on it, each leased to one user at a time and flushed before
use."""
TEST_REDIS_DBS = range(8, 16)


def free_port() -> int:
    """A TCP port free on loopback now, for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_api(env: dict[str, str], *options: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamflow_assets.cli", "api", "--port", str(port), *options],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamflow api exited: {process.stdout.read()}")
        try:
            httpx.get(f"{base}/openapi.json", timeout=1)
            return process, base
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("streamflow api did not answer within 60 s")


def stop_api(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def start_process(
    command: list[str],
    env: dict[str, str],
    probe: str | None,
    timeout: float = 120,
    ready=None,
) -> subprocess.Popen:
    """Start a server in its own process group; wait until `probe` answers 200 (or `ready()`
    is true)."""
    process = subprocess.Popen(
        command,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}")
        if ready is not None:
            if ready():
                return process
        else:
            try:
                if httpx.get(probe, timeout=2).status_code == 200:
                    return process
            except httpx.TransportError:
                pass
        time.sleep(0.5)
    stop_process(process)
    raise RuntimeError(f"{' '.join(command)} did not answer {probe} within {timeout} s")


def stop_process(process: subprocess.Popen) -> None:
    """Stop a server and everything it started (dagster dev runs a daemon and a webserver)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_for_run(client, run_id: str, timeout: float = 300) -> dg.DagsterRunStatus | None:
    """Poll a run submitted through the webserver's GraphQL API until it ends."""
    from dagster_graphql import DagsterGraphQLClientError

    ended = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        try:
            status = client.get_run_status(run_id)
        except DagsterGraphQLClientError:
            status = None  # the run is not in storage yet
        if status in ended:
            return status
        time.sleep(2)
    return status


def while_rematerializing_online(warehouse, read: Callable[[threading.Event], None]) -> None:
    """Run `read(done)` in a thread while 2024-01 and 2024-02 are materialized online again."""
    done = threading.Event()
    reader = threading.Thread(target=read, args=(done,))
    reader.start()
    try:
        for partition in ("2024-01", "2024-02"):
            result = warehouse.materialize(partition, selection="online_features")
            assert result.success, failure_text(result)
    finally:
        done.set()
        reader.join()


def traversable_tmp_dir(prefix: str) -> Path:
    """A new folder the embedded PostgreSQL's system user can enter when tests run as root."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def server_url() -> Iterator[URL]:
    """A URL on the test server; its database is only used to create and drop others."""
    raw = os.environ.get(TEST_URL_VAR, "")
    if raw:
        yield parse_database_url(raw)
        return
    home = Path(tempfile.gettempdir()) / f"streamflow-test-home-{os.getuid()}"
    home.mkdir(mode=0o755, exist_ok=True)
    started_here = running_server(home) is None
    url = ensure_server(home)
    yield url
    if started_here:
        stop_server(home)


@pytest.fixture(scope="session")
def database_url(server_url: URL) -> Iterator[URL]:
    """A database created for this test session and dropped after it."""
    url = create_database(server_url)
    yield url
    drop_database(server_url, url)


def create_database(server_url: URL, template: str | None = None) -> URL:
    """A new database on the test server, optionally a copy of another."""
    name = f"streamflow_test_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{copy}')
    return server_url.set(database=name)


def drop_database(server_url: URL, url: URL) -> None:
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')


@pytest.fixture
def project_env(
    monkeypatch: pytest.MonkeyPatch, database_url: URL, tmp_path: Path
) -> dict[str, str]:
    """The settings environment of one test: the session database, folders under tmp_path."""
    env = {
        "STREAMFLOW_DATABASE_URL": libpq_url(database_url),
        "STREAMFLOW_HOME": str(tmp_path / "home"),
        "STREAMFLOW_DROPS_DIR": str(tmp_path / "drops"),
        "STREAMFLOW_OUTPUT_DIR": str(tmp_path / "processed"),
        "STREAMFLOW_FIRST_MONTH": "2024-01",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def settings(project_env: dict[str, str]) -> Settings:
    return Settings.from_env()


# ---- online stores: PostgreSQL (the settings' database), a Redis server, a Redis Cluster -------


class RedisDatabases:
    """The test server's databases TEST_REDIS_DBS, each leased to one user at a time, flushed
    when it is handed out. A lease is a lock file per database, so two test sessions on one
    machine (sharing its Redis) never flush each other's."""

    def __init__(self, base: str):
        self.base = base.rstrip("/")

    @contextlib.contextmanager
    def lease(self) -> Iterator[dict[str, str]]:
        """The online-store environment of a database of its own, given back at the end."""
        import redis

        for number in TEST_REDIS_DBS:
            url = f"{self.base}/{number}"
            lock = lock_redis_database(url)
            if lock is None:
                continue
            try:
                redis.Redis.from_url(url).flushdb()
                yield {"STREAMFLOW_ONLINE_STORE": "redis", "STREAMFLOW_REDIS_URL": url}
            finally:
                lock.close()
            return
        raise RuntimeError(
            f"every Redis database of TEST_REDIS_DBS ({TEST_REDIS_DBS}) is in use at once, by "
            "this test session or another on this machine: give the tests more"
        )


def lock_redis_database(url: str):
    """An open lock file held for `url`, or None when another lease holds it (in this process
    or another: flock locks conflict between separate opens)."""
    name = hashlib.sha256(url.encode()).hexdigest()[:16]
    file = (Path(tempfile.gettempdir()) / f"streamflow-test-redis-{name}.lock").open("a")
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.close()
        return None
    return file


@pytest.fixture(scope="session")
def redis_databases() -> RedisDatabases:
    """The Redis databases of the test server; skips when no Redis answers."""
    import redis

    base = os.environ.get(TEST_REDIS_VAR, "") or "redis://127.0.0.1:6379"
    try:
        redis.Redis.from_url(base, socket_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis answers at {base} ({exc}): set {TEST_REDIS_VAR}")
    return RedisDatabases(base)


@pytest.fixture
def redis_server(redis_databases) -> Iterator[Callable[[], dict[str, str]]]:
    """Hand out the online-store environment of a flushed Redis database of its own each call,
    for one test: the databases are given back when it ends."""
    with contextlib.ExitStack() as leases:
        yield lambda: leases.enter_context(redis_databases.lease())


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory) -> Iterator[dict[str, str]]:
    """A Redis Cluster of three masters on free local ports, started from the machine's
    redis-server; the online-store environment pointing at one of its nodes."""
    import redis
    from redis.cluster import ClusterNode, RedisCluster

    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("no redis-server on PATH to start a Redis Cluster with")
    folder = tmp_path_factory.mktemp("redis_cluster")
    processes: list[subprocess.Popen] = []
    try:
        for _ in range(3):
            processes.append(_cluster_node(server, folder))
        ports = [int(p.args[2]) for p in processes]
        nodes = [redis.Redis(port=port) for port in ports]
        # The 16384 slots split over the three masters, as `redis-cli --cluster create` does.
        for i, node in enumerate(nodes):
            node.execute_command("CLUSTER ADDSLOTSRANGE", 16384 * i // 3, 16384 * (i + 1) // 3 - 1)
        for node in nodes[1:]:
            node.execute_command("CLUSTER MEET", "127.0.0.1", ports[0])
        _wait_for(
            lambda: all(n.execute_command("CLUSTER INFO")["cluster_state"] == "ok" for n in nodes),
            "the cluster to be ok",
        )
        RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", ports[0])]).ping()
        yield {
            "STREAMFLOW_ONLINE_STORE": "redis_cluster",
            "STREAMFLOW_REDIS_URL": f"redis://127.0.0.1:{ports[0]}",
            "ports": ",".join(map(str, ports)),
        }
    finally:
        for process in processes:
            process.kill()
            process.wait()


def _cluster_node(server: str, folder: Path) -> subprocess.Popen:
    """A cluster-enabled redis-server on a free port, answering (another port when the one
    picked was taken meanwhile)."""
    import redis

    for _ in range(5):
        port = free_port()
        process = subprocess.Popen(
            [
                server, "--port", str(port), "--bind", "127.0.0.1",
                "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                "--appendonly", "no", "--save", "", "--dir", str(folder),
            ],
            stdout=(folder / f"redis-{port}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        node = redis.Redis(port=port)
        _wait_for(
            lambda: process.poll() is not None or _answers(node),  # noqa: B023
            f"redis-server on port {port} (log in {folder})",
        )
        if process.poll() is None:
            return process
    raise RuntimeError(f"redis-server did not start on five free ports (logs in {folder})")


def _answers(node) -> bool:
    import redis

    try:
        return bool(node.ping())
    except redis.ConnectionError:
        return False


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"waited {timeout} s for {what}")
        time.sleep(0.1)


ONLINE_STORE_VARS = ("STREAMFLOW_ONLINE_STORE", "STREAMFLOW_REDIS_URL")
_SESSION_ONLINE_STORE = {var: os.environ.get(var) for var in ONLINE_STORE_VARS}


@pytest.fixture(autouse=True)
def online_store_as_the_session_began() -> Iterator[None]:
    """After every test, the online store variables as the session began. Module-scoped
    warehouses set them through monkeypatches of their own; when two such patches interleave
    (one warehouse activated while another's value is set), the one undone last would restore
    the other's value for every later module."""
    yield
    for var, value in _SESSION_ONLINE_STORE.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


# ---- warehouses: a database and a drops folder to run the asset graph on --------------------

SEED_USERS = 300


@pytest.fixture(scope="module")
def seed_drops(tmp_path_factory) -> Path:
    """Three months of a changing subscriber base (signups and leavers)."""
    out = tmp_path_factory.mktemp("seed_drops")
    generate_drops(out, users=SEED_USERS, months=3, seed=21, dynamic=True)
    return out


class Warehouse:
    """One test's database and drops folder, and ways to run the graph on them."""

    def __init__(
        self,
        url: URL,
        drops: Path,
        monkeypatch: pytest.MonkeyPatch,
        online: dict[str, str] | None = None,
    ):
        self.url = url
        self.drops = drops
        self.online = {k: v for k, v in (online or {}).items() if k in ONLINE_STORE_VARS}
        """The online store's settings (none: PostgreSQL, the default)."""
        self.output = drops.parent / f"{drops.name}-processed"
        self._monkeypatch = monkeypatch
        self.activate()
        self.engine = get_engine(Settings.from_env())

    def activate(self) -> None:
        """Point the settings environment at this warehouse."""
        self._monkeypatch.setenv("STREAMFLOW_DATABASE_URL", libpq_url(self.url))
        self._monkeypatch.setenv("STREAMFLOW_DROPS_DIR", str(self.drops))
        self._monkeypatch.setenv("STREAMFLOW_FIRST_MONTH", "2024-01")
        self._monkeypatch.setenv("STREAMFLOW_OUTPUT_DIR", str(self.output))
        for var in ONLINE_STORE_VARS:
            if var in self.online:
                self._monkeypatch.setenv(var, self.online[var])
            else:
                self._monkeypatch.delenv(var, raising=False)

    def materialize(
        self, partition: str, selection=None, instance: dg.DagsterInstance | None = None
    ) -> dg.ExecuteInProcessResult:
        self.activate()
        return materialize_month(partition, selection=selection, instance=instance)

    def load(self, *partitions: str, selection=None, instance=None) -> None:
        for partition in partitions:
            result = self.materialize(partition, selection, instance)
            assert result.success, failure_text(result)

    def state(self) -> dict[str, list[tuple]]:
        """Every row of every live, month and snapshot table (staging must be empty)."""
        with self.engine.connect() as conn:
            tables = conn.execute(
                sa.text(
                    "SELECT schemaname, tablename FROM pg_tables "
                    "WHERE schemaname IN ('public', :drops, :staging) ORDER BY 1, 2"
                ),
                {"drops": DROPS_SCHEMA, "staging": STAGING_SCHEMA},
            ).all()
            state = {}
            for schema, table in tables:
                rows = conn.execute(sa.text(f'SELECT * FROM "{schema}"."{table}"')).all()
                state[f"{schema}.{table}"] = sorted(tuple(map(str, r)) for r in rows)
        return state

    def frame(self, query: str, **params) -> pd.DataFrame:
        with self.engine.connect() as conn:
            return pd.read_sql(sa.text(query), conn, params=params)


def materialization(result: dg.ExecuteInProcessResult, asset: str) -> dg.AssetMaterialization:
    return next(
        event.materialization
        for event in result.get_asset_materialization_events()
        if event.materialization.asset_key.path == [asset]
    )


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    texts = []
    for event in result.get_step_failure_events():
        error = event.event_specific_data.error
        while error is not None:
            texts.append(error.message)
            error = error.cause
    return "\n".join(texts)


@pytest.fixture
def new_warehouse(
    server_url: URL, seed_drops: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Warehouse]]:
    """Make warehouses: an empty database (or a copy of one) and a copy of the seed drops."""
    made: list[Warehouse] = []

    def make(template: URL | None = None, online: dict[str, str] | None = None) -> Warehouse:
        drops = tmp_path / f"drops{len(made)}"
        shutil.copytree(seed_drops, drops)
        url = create_database(server_url, template.database if template else None)
        made.append(Warehouse(url, drops, monkeypatch, online))
        return made[-1]

    yield make
    for warehouse in made:
        warehouse.engine.dispose()
        drop_database(server_url, warehouse.url)


@pytest.fixture(scope="module")
def january(server_url: URL, seed_drops: Path) -> Iterator[URL]:
    """A database holding January, loaded once: a template for the bad-input tests."""
    url = create_database(server_url)
    with pytest.MonkeyPatch.context() as patch:
        warehouse = Warehouse(url, seed_drops, patch)
        # Not the feature store: Feast's connection pools would keep the template busy.
        warehouse.load("2024-01", selection=dg.AssetSelection.groups("ingestion", "snapshots"))
        warehouse.engine.dispose()
    yield url
    drop_database(server_url, url)


def read_month(drops: Path, month: int, table: str) -> pd.DataFrame:
    return pd.read_csv(
        drops / f"month_{month:03d}" / f"{table}.csv", dtype=str, keep_default_na=False
    )


def edit_csv(path: Path, change: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    """Rewrite a drop file through a change to its rows (every value read as text)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    change(frame).to_csv(path, index=False)
