"""Benchmarks that print numbers (timing goals live here, never in tests).

`streamflow bench ingest` generates monthly drops, creates a scratch database on the configured
server (STREAMFLOW_DATABASE_URL, or the embedded PostgreSQL), and times in the same run:
- plain COPY of the six files into unindexed tables: the floor;
- the pipeline: a whole month through the asset graph (staging, validation, publish, snapshots)
  for the first month, the next month on top of it, and the first month re-run;
- the naive method for the six upserts alone: pandas read_csv -> to_sql into a temporary table ->
  INSERT ... ON CONFLICT DO UPDATE.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import URL

from streamflow_assets.db import database_url, get_engine, libpq_url
from streamflow_assets.generator import generate_drops
from streamflow_assets.months import (
    as_of,
    event_timestamp,
    partition_key,
    previous_month,
    time_window,
)
from streamflow_assets.runs import materialize_month
from streamflow_assets.settings import Settings, add_months
from streamflow_assets.sql import copy_in, file_chunks, ident
from streamflow_assets.table_specs import TABLES
from streamflow_assets.warehouse import PG_TYPES, column_ddl
from streamflow_bench.faults import database

INGEST_SELECTION = dg.AssetSelection.groups("ingestion", "snapshots")


@contextlib.contextmanager
def scratch_database(server: URL) -> Iterator[URL]:
    with database(server, f"streamflow_bench_{uuid.uuid4().hex[:8]}") as url:
        yield url


def bench_drops(
    stack: contextlib.ExitStack, drops: Path | None, users: int, months: int, seed: int
) -> Path:
    """The drops given, or `months` generated months of `users` users in a temporary folder
    that lives as long as `stack`."""
    if drops is not None:
        return drops
    drops = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sf-bench-")))
    started = time.perf_counter()
    generate_drops(
        drops, users=users, months=months, seed=seed, first_month=Settings.from_env().first_month
    )
    print(f"generated {months} months of {users:,} users in {time.perf_counter() - started:.1f} s")
    return drops


def plain_copy(url: URL, folder: Path) -> float:
    """COPY the six files into unindexed TEXT tables."""
    engine = sa.create_engine(url)
    started = time.perf_counter()
    with engine.begin() as conn:
        for spec in TABLES:
            table = ident("copy_" + spec.name)
            columns = ", ".join(f"{ident(c.name)} text" for c in spec.columns)
            conn.execute(sa.text(f"CREATE TABLE {table} ({columns})"))
            copy_in(
                conn, table, spec.column_names, file_chunks(folder / spec.file_name), header=True
            )
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds


def naive_upserts(url: URL, folder: Path) -> float:
    """pandas read_csv -> to_sql into a temporary table -> INSERT ... ON CONFLICT DO UPDATE."""
    engine = sa.create_engine(url)
    started = time.perf_counter()
    for spec in TABLES:
        target = ident("naive_" + spec.name)
        columns = [ident(c.name) for c in spec.columns]
        with engine.begin() as conn:
            ddl = ", ".join(column_ddl(c) for c in spec.columns)
            conn.execute(
                sa.text(f"CREATE TABLE IF NOT EXISTS {target} ({ddl}, PRIMARY KEY (user_id))")
            )
        frame = pd.read_csv(folder / spec.file_name)
        with engine.begin() as conn:
            frame.to_sql("naive_stage", conn, if_exists="replace", index=False)
            casts = ", ".join(
                f"{c}::{PG_TYPES[col.sql_type]}"
                for c, col in zip(columns, spec.columns, strict=True)
            )
            updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns[1:])
            conn.execute(
                sa.text(
                    f"INSERT INTO {target} ({', '.join(columns)}) SELECT {casts} FROM naive_stage "
                    f"ON CONFLICT (user_id) DO UPDATE SET {updates}"
                )
            )
    engine.dispose()
    return time.perf_counter() - started


def pipeline_month(partition: str) -> tuple[float, dict[str, float]]:
    """One whole month through the asset graph; seconds in all and per ingestion phase."""
    started = time.perf_counter()
    result = materialize_month(partition, selection=INGEST_SELECTION)
    seconds = time.perf_counter() - started
    if not result.success:
        raise RuntimeError(f"the pipeline failed on {partition}")
    phases: dict[str, float] = {}
    snapshots = 0.0
    for event in result.get_asset_materialization_events():
        metadata = event.materialization.metadata
        if "seconds by phase" in metadata:
            for phase, value in metadata["seconds by phase"].value.items():
                if phase.endswith("(all files)"):
                    phases[phase] = value
                else:  # files are validated two at a time: these sums overlap in time
                    key = f"{phase}, summed over files"
                    phases[key] = phases.get(key, 0.0) + value
        elif "seconds" in metadata:
            snapshots = max(snapshots, metadata["seconds"].value)
    phases["snapshots (slowest table)"] = snapshots
    return seconds, phases


def bench_ingest(users: int, seed: int, drops: Path | None, skip_naive: bool) -> None:
    settings = Settings.from_env()
    server = database_url(settings)
    with contextlib.ExitStack() as stack:
        drops = bench_drops(stack, drops, users, 2, seed)
        url = stack.enter_context(scratch_database(server))
        with psycopg.connect(libpq_url(url)) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
        where = "embedded" if settings.database_url is None else "STREAMFLOW_DATABASE_URL"
        print(f"server: PostgreSQL {version} ({where}); scratch database {url.database}")
        os.environ["STREAMFLOW_DATABASE_URL"] = libpq_url(url)
        os.environ["STREAMFLOW_DROPS_DIR"] = str(drops)
        first = partition_key(settings.first_month)
        second = partition_key(add_months(settings.first_month, 1))

        rows = []
        copy_seconds = plain_copy(url, drops / "month_000")
        rows.append(("plain COPY of the six files, unindexed", copy_seconds, {}))
        for label, partition in (
            (f"pipeline {first}: first month, whole graph", first),
            (f"pipeline {second}: next month on top", second),
            (f"pipeline {first} again: old month re-run", first),
        ):
            seconds, phases = pipeline_month(partition)
            rows.append((label, seconds, phases))
        naive = None
        if not skip_naive:
            naive = naive_upserts(url, drops / "month_000")
            rows.append(("naive: read_csv -> to_sql -> ON CONFLICT, six upserts", naive, {}))

    print(f"\n{'':55s} {'seconds':>8s}")
    for label, seconds, phases in rows:
        print(f"{label:55s} {seconds:8.1f}")
        for phase, value in phases.items():
            print(f"    {phase:51s} {value:8.1f}")
    if naive:
        print(f"\nfirst month, whole graph vs naive six upserts: {naive / rows[1][1]:.1f}x faster")


# ---- the feature store: our paths beside Feast's defaults -------------------------------------


def bench_feast(
    users: int,
    seed: int,
    drops: Path | None,
    months: int,
    feast_default: bool,
    online_store: str = "postgres",
) -> None:
    """Online materialization of one month and the training CSV with 1, 3 and `months` months
    loaded, each beside Feast's own path (`materialize()`, `get_historical_features`), with
    the online store given (for Redis, the project's keys in STREAMFLOW_REDIS_URL replaced)."""
    from streamflow_assets.feature_store.repo import FEATURE_SERVICE, feature_store

    os.environ["STREAMFLOW_ONLINE_STORE"] = online_store
    settings = Settings.from_env()
    server = database_url(settings)
    checkpoints = sorted({1, min(3, months), months})
    with contextlib.ExitStack() as stack:
        drops = bench_drops(stack, drops, users, months, seed)
        url = stack.enter_context(scratch_database(server))
        os.environ["STREAMFLOW_DATABASE_URL"] = libpq_url(url)
        os.environ["STREAMFLOW_DROPS_DIR"] = str(drops)
        output = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sf-bench-out-")))
        os.environ["STREAMFLOW_OUTPUT_DIR"] = str(output)
        with psycopg.connect(libpq_url(url)) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
        where = "embedded" if settings.database_url is None else "STREAMFLOW_DATABASE_URL"
        print(f"server: PostgreSQL {version} ({where}); scratch database {url.database}")
        print(f"online store: {online_store_name(settings)}")

        rows: list[tuple[str, float | None, float | None]] = []
        partitions = [partition_key(add_months(settings.first_month, i)) for i in range(months)]
        for loaded, partition in enumerate(partitions, start=1):
            _timed_month(partition, INGEST_SELECTION | dg.AssetSelection.assets("feast_registry"))
            store = feature_store(Settings.from_env())
            if loaded == 1:
                clear_redis_online(store)
            if loaded in (1, months):
                ours = _timed_month(partition, dg.AssetSelection.assets("online_features"))
                theirs = None
                if feast_default and loaded == 1:
                    clear_redis_online(store)  # Feast skips users whose month is online already
                    theirs = _feast_materialize(store, partition)
                    # Feast's run overwrote the month: write ours again, from the same start.
                    clear_redis_online(store)
                    ours = _timed_month(partition, dg.AssetSelection.assets("online_features"))
                label = f"online store ({settings.online_store}), month {partition} with checks"
                rows.append((label, ours, theirs))
                _print_row(rows[-1])
                rows.append(("  of which its two checks", _timed_online_checks(partition), None))
                _print_row(rows[-1])
            if loaded in checkpoints:
                ours, built = _timed_training(partition)
                theirs = (
                    _feast_training(store, partition, FEATURE_SERVICE) if feast_default else None
                )
                rows.append((f"training CSV {partition}, {loaded} month(s) loaded", ours, theirs))
                _print_row(rows[-1])
                # Feast's path builds and writes the CSV, no more: beside it, the same work of
                # the run (its own checks of the rows included; the run adds feature_drift and
                # Dagster's run).
                rows.append(("  of which the CSV built and written", built, theirs))
                _print_row(rows[-1])
                rows.append(("  of which feature_drift", _timed_drift(partition), None))
                _print_row(rows[-1])

    print(f"\n{users:,} users{'':42s} {'ours (s)':>9s} {'Feast (s)':>10s} {'speed-up':>9s}")
    for row in rows:
        _print_row(row)


def online_store_name(settings: Settings) -> str:
    if settings.online_store == "postgres":
        return "PostgreSQL (the database above)"
    return f"{settings.online_store} at {settings.redis_url}"


def clear_redis_online(store) -> int:
    """Remove this project's keys from a Redis online store (nothing for PostgreSQL); how many."""
    from streamflow_assets.adapters.feast import redis_client, redis_key_suffix
    from streamflow_assets.feature_store.connection import uses_redis

    if not uses_redis(store.config):
        return 0
    client = redis_client(store)
    suffix = redis_key_suffix(store.config)
    removed, batch = 0, []
    for key in client.scan_iter(match=b"*" + suffix, count=10_000):
        batch.append(key)
        if len(batch) == 10_000:
            removed += _unlink(client, batch)
            batch = []
    return removed + (_unlink(client, batch) if batch else 0)


def _unlink(client, keys: list[bytes]) -> int:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.unlink(key)
    return sum(pipe.execute())


def _print_row(row: tuple[str, float, float | None]) -> None:
    label, ours, theirs = row
    ratio = f"{theirs / ours:8.1f}x" if theirs and ours else ""
    feast = f"{theirs:10.1f}" if theirs is not None else f"{'-':>10s}"
    print(f"{label:55s} {ours:9.1f} {feast} {ratio}", flush=True)


def _timed_month(partition: str, selection: dg.AssetSelection) -> float:
    return _timed_run(partition, selection)[0]


def _timed_run(
    partition: str, selection: dg.AssetSelection
) -> tuple[float, dg.ExecuteInProcessResult]:
    started = time.perf_counter()
    result = materialize_month(partition, selection=selection)
    if not result.success:
        raise RuntimeError(f"{selection} failed on {partition}")
    return time.perf_counter() - started, result


def _timed_training(partition: str) -> tuple[float, float]:
    """(seconds of a training_dataset run, seconds its CSV took to build and write)."""
    seconds, result = _timed_run(partition, dg.AssetSelection.assets("training_dataset"))
    (event,) = result.get_asset_materialization_events()
    return seconds, event.materialization.metadata["seconds to build and write"].value


def _feast_materialize(store, partition: str) -> float:
    """Feast's default path: `FeatureStore.materialize` over the partition's window."""
    start, end = time_window(partition)
    started = time.perf_counter()
    store.materialize(start_date=start, end_date=end)
    return time.perf_counter() - started


def _feast_training(store, partition: str, service: str) -> float:
    """Feast's default path: `get_historical_features` for the month's users, to a CSV."""
    started = time.perf_counter()
    with sa.create_engine(
        os.environ["STREAMFLOW_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
    ).connect() as conn:
        entities = pd.read_sql(
            sa.text("SELECT user_id FROM labels_snapshots WHERE as_of = :a"),
            conn,
            params={"a": as_of(partition)},
        )
    entities["event_timestamp"] = event_timestamp(partition)
    frame = store.get_historical_features(
        entity_df=entities, features=store.get_feature_service(service)
    ).to_df()
    with tempfile.NamedTemporaryFile(suffix=".csv") as out:
        frame.to_csv(out.name, index=False)
    return time.perf_counter() - started


def _timed_online_checks(partition: str) -> float:
    """The seconds of online_features' two checks on their own (they passed in the run)."""
    from streamflow_assets.feature_store.repo import feature_store
    from streamflow_assets.feature_store.verify import every_user_online, online_matches_offline

    settings = Settings.from_env()
    engine, store = get_engine(settings), feature_store(settings)
    started = time.perf_counter()
    outcomes = [
        every_user_online(engine, store, partition),
        online_matches_offline(engine, store, partition),
    ]
    seconds = time.perf_counter() - started
    if not all(o.passed for o in outcomes):
        raise RuntimeError("; ".join(o.description for o in outcomes))
    return seconds


def _timed_drift(partition: str) -> float:
    """The seconds of training_dataset's feature_drift on its own (previous month included)."""
    from streamflow_assets.feature_store.repo import feature_store
    from streamflow_assets.feature_store.training import previous_features, training_table
    from streamflow_assets.monitoring import feature_drift

    settings = Settings.from_env()
    engine, store = get_engine(settings), feature_store(settings)
    table = training_table(engine, store, partition)
    started = time.perf_counter()
    previous = previous_month(partition)
    feature_drift(
        table,
        previous_features(engine, store, settings.output_dir, previous, table.schema),
        partition,
        previous,
        settings.output_dir,
    )
    return time.perf_counter() - started


# ---- the online API beside `feast serve` ------------------------------------------------------

API_SCENARIOS = (
    ("one user", 1, 1),
    ("one user", 8, 1),
    ("one user", 32, 1),
    ("100 users", 1, 100),
    ("100 users", 8, 100),
)
"""(what, concurrency, users per request)."""
PREDICT_CONCURRENCY = (1, 8)
"""/predict (one user, the champion's score) beside /features/{user_id} at these concurrencies."""


def bench_api(
    users: int,
    seed: int,
    drops: Path | None,
    workers: int,
    requests: int,
    seconds: float,
    during_publish: bool = False,
    online_store: str = "postgres",
) -> None:
    """Latency and throughput of `streamflow api` and `feast serve`, same store, same run; with
    `during_publish`, also `streamflow api` idle against while the next month goes online.
    With a Redis `online_store`, the month goes into Redis too, and the table has `streamflow
    api` on PostgreSQL and on Redis beside `feast serve` on Redis."""
    settings = Settings.from_env()
    server = database_url(settings)
    with contextlib.ExitStack() as stack:
        drops = bench_drops(stack, drops, users, 2 if during_publish else 1, seed)
        url = stack.enter_context(scratch_database(server))
        os.environ["STREAMFLOW_DATABASE_URL"] = libpq_url(url)
        os.environ["STREAMFLOW_DROPS_DIR"] = str(drops)
        first = partition_key(settings.first_month)
        started = time.perf_counter()
        selection = INGEST_SELECTION | dg.AssetSelection.assets("feast_registry", "online_features")
        if not during_publish:  # /predict needs the month's model
            selection |= dg.AssetSelection.assets("training_dataset", "churn_model")
        _timed_month(first, selection)
        with psycopg.connect(libpq_url(url)) as conn:
            online = conn.execute(
                "SELECT count(DISTINCT entity_key) FROM feast_online.streamflow_subs_profile_fv"
            ).fetchone()[0]
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT user_id FROM users ORDER BY md5(user_id) LIMIT 20000"
                ).fetchall()
            ]
        print(
            f"{online:,} users online after {time.perf_counter() - started:.0f} s; "
            f"{workers} worker(s) per server, loopback, one client process"
        )

        if during_publish:
            second = partition_key(add_months(settings.first_month, 1))
            _timed_month(second, INGEST_SELECTION | dg.AssetSelection.assets("feast_registry"))
        servers = [("streamflow api", stack.enter_context(_server_process(["api"], workers)))]
        if during_publish:
            _bench_api_during_publish(servers[0][1], url, second, requests, seconds)
            return
        feast_env: dict[str, str] = {}
        if online_store != "postgres":
            feast_env = {"STREAMFLOW_ONLINE_STORE": online_store}
            os.environ.update(feast_env)
            from streamflow_assets.feature_store.repo import feature_store

            clear_redis_online(feature_store(Settings.from_env()))
            seconds_redis = _timed_month(first, dg.AssetSelection.assets("online_features"))
            print(f"the month written into {online_store_name(Settings.from_env())} "
                  f"in {seconds_redis:.1f} s (with its checks)")  # fmt: skip
            os.environ["STREAMFLOW_ONLINE_STORE"] = "postgres"
            servers[0] = ("streamflow api, postgres", servers[0][1])
            redis_api = stack.enter_context(_server_process(["api"], workers, feast_env))
            servers.append((f"streamflow api, {online_store}", redis_api))
        feast = stack.enter_context(_server_process(["feast-serve"], workers, feast_env))
        servers.append((f"feast serve{', ' + online_store if feast_env else ''}", feast))
        width = max(len(f"{name}, 100 users, c=32") for name, _ in servers)
        print(f"\n{'':{width}s} {'p50 ms':>8s} {'p99 ms':>8s} {'req/s':>8s} {'requests':>9s}")
        for what, concurrency, per_request in API_SCENARIOS:
            for name, base in servers:
                kind = "feast serve" if name.startswith("feast serve") else "streamflow api"
                stats = asyncio_run_load(
                    kind, base, ids, concurrency, per_request, requests, seconds
                )
                label = f"{name}, {what}, c={concurrency}"
                print(
                    f"{label:{width}s} {stats['p50']:8.2f} {stats['p99']:8.2f} "
                    f"{stats['rps']:8.0f} {stats['n']:9d} {stats['failed']}",
                    flush=True,
                )
        print()
        for concurrency in PREDICT_CONCURRENCY:
            p99 = {}
            for endpoint in ("features", "predict"):
                stats = asyncio_run_load(
                    "streamflow api", servers[0][1], ids, concurrency, 1, requests, seconds,
                    endpoint=endpoint,
                )  # fmt: skip
                p99[endpoint] = stats["p99"]
                label = f"streamflow api /{endpoint}, c={concurrency}"
                print(
                    f"{label:28s} {stats['p50']:8.2f} {stats['p99']:8.2f} "
                    f"{stats['rps']:8.0f} {stats['n']:9d} {stats['failed']}",
                    flush=True,
                )
            ratio = p99["predict"] / p99["features"]
            print(f"  /predict p99 is {ratio:.2f}x /features' at c={concurrency}")


def _bench_api_during_publish(
    base: str, url: URL, month: str, requests: int, seconds: float
) -> None:
    """One user per request at c=8, idle and while `month` is written and published online (in
    another process, as a run would); every answer's feature views must come from one month."""
    import json
    import subprocess
    import sys

    first, *others = [t.snapshot.name for t in TABLES if t.snapshot and t.snapshot.feature_view]
    in_every_view = " ".join(
        f"AND EXISTS (SELECT 1 FROM {ident(o)} o WHERE o.user_id = s.user_id AND o.as_of = s.as_of)"
        for o in others
    )
    with psycopg.connect(libpq_url(url)) as conn:
        # Users in every view of both months: a mixed answer shows in their views' as_of dates.
        ids = [
            r[0]
            for r in conn.execute(
                f"SELECT user_id FROM {ident(first)} s WHERE as_of = %s {in_every_view} "
                "ORDER BY md5(s.user_id) LIMIT 20000",
                (as_of(month),),
            ).fetchall()
        ]

    def one_month(body: bytes) -> str | None:
        months = set(json.loads(body)["feature_views"].values())
        return None if len(months) == 1 else "mixed months"

    script = (
        "import sys, dagster as dg; from streamflow_assets.runs import materialize_month; "
        "r = materialize_month(sys.argv[1], selection=dg.AssetSelection.assets('online_features'));"
        " sys.exit(0 if r.success else 1)"
    )
    cpus = Settings.from_env().background_cpus
    print(
        "\nthe online write's background CPU limit (STREAMFLOW_BACKGROUND_CPUS): "
        + (f"{cpus:g} CPU" if cpus else "none")
    )
    print(
        f"{'streamflow api, one user':40s} {'p50 ms':>8s} {'p99 ms':>8s} {'requests':>9s}"
        "  failed, mixed-month answers"
    )
    for what, concurrency in (("c=8", 8),):
        idle = asyncio_run_load(
            "streamflow api", base, ids, concurrency, 1, requests, seconds,
            inspect=one_month,
        )  # fmt: skip
        print(
            f"{what + ', idle':40s} {idle['p50']:8.2f} {idle['p99']:8.2f} {idle['n']:9d}  "
            f"{idle['failed'] or '0'}"
        )
        started = time.perf_counter()
        writer = subprocess.Popen([sys.executable, "-c", script, month])
        busy = asyncio_run_load(
            "streamflow api", base, ids, concurrency, 1, 10**9, 3600,
            until=lambda w=writer: w.poll() is not None, inspect=one_month,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        if writer.wait() != 0:
            raise RuntimeError(f"online_features {month} failed")
        label = f"{what}, {month} going online ({elapsed:.0f} s)"
        print(
            f"{label:40s} {busy['p50']:8.2f} {busy['p99']:8.2f} {busy['n']:9d}  "
            f"{busy['failed'] or '0'}; p99 {busy['p99'] / idle['p99']:.1f}x idle",
            flush=True,
        )
        _print_p99_by_window(busy["timeline"])


def _print_p99_by_window(timeline: list[tuple[float, float]], width: float = 20.0) -> None:
    first = timeline[0][0] if timeline else 0.0
    windows: dict[int, list[float]] = {}
    for at, ms in timeline:
        windows.setdefault(int((at - first) // width), []).append(ms)
    cells = []
    for window, values in sorted(windows.items()):
        values.sort()
        cells.append(f"{window * width:.0f}s: {values[int(len(values) * 0.99)]:.1f}")
    print("  p99 ms by 20 s from its start: " + ", ".join(cells))


@contextlib.contextmanager
def _server_process(kind: list[str], workers: int, env: dict[str, str] | None = None):
    import subprocess
    import sys

    from streamflow_assets.feature_store.repo import feast_command, feature_repo

    port = free_port()
    if kind == ["api"]:
        command = [sys.executable, "-m", "streamflow_assets.cli", "api", "--port", str(port),
                   "--workers", str(workers)]  # fmt: skip
    else:
        # Feast recycles a worker every 1,000 requests by default, dropping its connections
        # mid-benchmark; 0 turns that off.
        repo = feature_repo(Settings.from_env())
        command = feast_command(repo, "serve", "-p", str(port), "-w", str(workers),
                                "--no-access-log", "--max-requests", "0")  # fmt: skip
    process = subprocess.Popen(
        command,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/health", process, timeout=120)
        yield base
    finally:
        stop_process_group(process)


def free_port() -> int:
    """A TCP port free on loopback now, for a server a benchmark starts."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, process, timeout: float) -> None:
    """Until `url` answers (any status): the server `process` started is up. Raises when the
    process exits first or `timeout` seconds pass."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{' '.join(process.args)} exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def stop_process_group(process) -> None:
    """A server started in a session of its own, and its workers: whatever has not stopped 30 s
    after SIGTERM is killed (feast serve's workers once ignored SIGTERM after a heavy run and
    failed the whole benchmark)."""
    import subprocess

    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


REQUEST_TIMEOUT = 10.0
"""Seconds before a request counts as failed."""


def asyncio_run_load(
    name: str,
    base: str,
    ids: list[str],
    concurrency: int,
    per_request: int,
    count: int,
    seconds: float,
    *,
    until: Callable[[], bool] | None = None,
    inspect: Callable[[bytes], str | None] | None = None,
    endpoint: str = "features",
) -> dict:
    """`count` requests (at most `seconds`, or until `until()` is true) from `concurrency`
    clients, each sending its next request when the last is answered; latencies in ms.
    `inspect` reads each 200 body and says what is wrong with it (None: nothing), which makes
    the request a failed one."""
    import asyncio
    import random

    import aiohttp

    rng = random.Random(7)

    def request_args() -> tuple[str, str, dict | None]:
        batch = rng.sample(ids, per_request)
        if name == "feast serve":
            body = {"feature_service": "churn_features", "entities": {"user_id": batch}}
            return "POST", f"{base}/get-online-features", body
        if endpoint == "predict":
            return "POST", f"{base}/predict", {"user_id": batch[0]}
        if per_request == 1:
            return "GET", f"{base}/features/{batch[0]}", None
        return "POST", f"{base}/features", {"user_ids": batch}

    async def run() -> dict:
        latencies: list[float] = []
        timeline: list[tuple[float, float]] = []
        failures: list[str] = []
        deadline = time.perf_counter() + seconds
        remaining = count
        connector = aiohttp.TCPConnector(limit=concurrency)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def attempt() -> str | None:
                """One request; None when answered 200, else what went wrong. A reset
                connection or a timeout is a failed request, not the end of the run."""
                method, url, body = request_args()
                try:
                    async with session.request(method, url, json=body) as response:
                        content = await response.read()
                        if response.status != 200:
                            return f"HTTP {response.status}"
                        return inspect(content) if inspect else None
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    return type(exc).__name__

            for _ in range(20):  # warm-up: connections, registry caches, pools
                await attempt()

            async def client():
                nonlocal remaining
                while remaining > 0 and time.perf_counter() < deadline:
                    if until is not None and until():
                        break
                    remaining -= 1
                    started = time.perf_counter()
                    failure = await attempt()
                    if failure is not None:
                        failures.append(failure)
                        continue
                    latencies.append((time.perf_counter() - started) * 1000)
                    timeline.append((started, latencies[-1]))

            started = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
        latencies.sort()
        if not latencies:
            raise RuntimeError(f"{name}: every request failed ({failures[0]})")
        return {
            "failed": f"{len(failures)} failed ({', '.join(sorted(set(failures)))})"
            if failures
            else "",
            "p50": latencies[len(latencies) // 2],
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "rps": len(latencies) / elapsed,
            "n": len(latencies),
            "timeline": timeline,
        }

    return asyncio.run(run())
