"""Kill a month's run at each failpoint; check what it left and that the next run heals it.

For every point of `streamflow_assets.failpoints`, on a copy of a database holding the first
month: run the second month (ingestion, snapshots, registry, online store) in a new process with
`STREAMFLOW_FAILPOINT` set, so it SIGKILLs itself there; fingerprint what it left; run the month
again without the failpoint; fingerprint again. Expected: after the kill each part of the state
is exactly as before the run or exactly as after a clean run (never a mix: a half-swapped month
of live tables or of online views is a failure), and after the re-run everything is exactly as
after a clean run, with no staging table left and the killed run marked failed.

`streamflow bench faults --users N` prints the figures at scale; the fault tests run the same
scenarios on the seed drops.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from sqlalchemy.engine import URL

from streamflow_assets.db import libpq_url
from streamflow_assets.failpoints import ENV, FAILPOINTS
from streamflow_assets.sql import ident
from streamflow_assets.table_specs import SNAPSHOT_TABLES, TABLES
from streamflow_assets.warehouse import DROPS_SCHEMA, STAGING_SCHEMA

FAULT_GROUPS = ("ingestion", "snapshots", "feature_store")
"""What a month's run writes that a kill can leave half done (training and model read it)."""

PARTS = ("live tables", "snapshots", "online store")
NEW_AFTER_KILL = {
    "ingest.staged": (),
    "ingest.validated": (),
    "ingest.built": (),
    "ingest.swapping": (),
    "ingest.published": ("live tables",),
    "online.staged": ("live tables", "snapshots"),
    "online.swapping": ("live tables", "snapshots"),
    "online.published": PARTS,
}
"""The parts a kill at each point leaves as the clean run has them; the others stay as before."""


def fingerprint(url: URL) -> dict[str, dict[str, str]]:
    """Per part of the state, per table: its row count and an order-free hash of its rows (the
    online tables without `created_ts`, the published months without their time)."""
    live = [("public", t.name) for t in TABLES]
    snapshots = [("public", t.snapshot.name) for t in SNAPSHOT_TABLES]
    with psycopg.connect(libpq_url(url)) as conn:
        months = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1",
                (DROPS_SCHEMA,),
            )
        ]
        online = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'feast_online' ORDER BY 1"
            )
        ]

        def digest(query: str) -> str:
            rows, total = conn.execute(
                f"SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)::numeric), 0) "
                f"FROM ({query}) t"
            ).fetchone()
            return f"{rows} rows, {total}"

        def table(schema: str, name: str, columns: str = "*") -> str:
            return digest(f"SELECT {columns} FROM {ident(schema, name)}")

        published = conn.execute(
            "SELECT to_regclass('streamflow_meta.online_months') IS NOT NULL"
        ).fetchone()[0]
        return {
            "live tables": {
                **{name: table(schema, name) for schema, name in live},
                **{f"{DROPS_SCHEMA}.{name}": table(DROPS_SCHEMA, name) for name in months},
            },
            "snapshots": {name: table(schema, name) for schema, name in snapshots},
            "online store": {
                **{
                    name: table(
                        "feast_online",
                        name,
                        "entity_key, feature_name, value, value_text, event_ts",
                    )
                    for name in online
                },
                "months published": (
                    table("streamflow_meta", "online_months", "month") if published else "none"
                ),
            },
        }


def staging_tables(url: URL) -> list[tuple[str, int]]:
    """(table, bytes) of what is left in the staging schema."""
    with psycopg.connect(libpq_url(url)) as conn:
        return conn.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY 1",
            (STAGING_SCHEMA,),
        ).fetchall()


@dataclass
class MonthRun:
    returncode: int
    seconds: float
    output: str

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL


def run_month(
    url: URL,
    drops: Path,
    home: Path,
    months: tuple[str, ...],
    partition: str,
    failpoint: str | None = None,
) -> MonthRun:
    """The month's run of FAULT_GROUPS in a new process on this database (`months` the drops'
    months, Dagster's run history in `home`), killed at `failpoint` if one is named."""
    env = {
        **os.environ,
        "STREAMFLOW_DATABASE_URL": libpq_url(url),
        "STREAMFLOW_DROPS_DIR": str(drops),
        "STREAMFLOW_FIRST_MONTH": months[0],
        "STREAMFLOW_OUTPUT_DIR": str(home / "output"),
        "DAGSTER_HOME": str(home),
    }
    env.pop(ENV, None)
    home.mkdir(parents=True, exist_ok=True)
    if failpoint:
        env[ENV] = failpoint
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "streamflow_bench.faults", partition],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return MonthRun(done.returncode, time.perf_counter() - started, done.stdout)


@dataclass
class FaultOutcome:
    failpoint: str
    killed: MonthRun
    left: dict[str, str]
    """Per part: "as before", "as after a clean run", or "MIXED" (some tables of each)."""
    leftovers: list[tuple[str, int]]
    heal: MonthRun
    healed: bool
    dead_run_marked_failed: bool
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _compare(got: dict, before: dict, after: dict) -> dict[str, str]:
    left = {}
    for part in PARTS:
        if got[part] == before[part]:
            left[part] = "as before"
        elif got[part] == after[part]:
            left[part] = "new"
        else:
            left[part] = "MIXED"
    return left


@contextlib.contextmanager
def database(server: URL, name: str, template: str | None = None) -> Iterator[URL]:
    admin = libpq_url(server)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {ident(name)} WITH (FORCE)")
        conn.execute(
            f"CREATE DATABASE {ident(name)}" + (f" TEMPLATE {ident(template)}" if template else "")
        )
    try:
        yield server.set(database=name)
    finally:
        try:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {ident(name)} WITH (FORCE)")
        except psycopg.OperationalError as error:  # the server went away: say what is left
            print(
                f"could not drop the scratch database {name} ({str(error).strip()}); "
                "drop it once the server is back",
                file=sys.stderr,
            )


def fault_scenarios(
    server: URL,
    drops: Path,
    months: tuple[str, str],
    failpoints=tuple(FAILPOINTS),
    prefix="sf_faults",
) -> Iterator[FaultOutcome]:
    """Kill the second month's run at each failpoint, on a copy of a database holding the
    first month, and heal it; one outcome per failpoint."""
    first, second = months
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sf-faults-")))
        base = stack.enter_context(database(server, f"{prefix}_base"))
        loaded = run_month(base, drops, work / "base", months, first)
        if loaded.returncode != 0:
            raise RuntimeError(f"loading {first} failed:\n{loaded.output[-3000:]}")
        before = fingerprint(base)
        with database(server, f"{prefix}_clean", template=base.database) as clean:
            ran = run_month(clean, drops, work / "clean", months, second)
            if ran.returncode != 0:
                raise RuntimeError(f"the clean run of {second} failed:\n{ran.output[-3000:]}")
            after = fingerprint(clean)
        for point in failpoints:
            home = work / point
            with database(server, f"{prefix}_case", template=base.database) as case:
                killed = run_month(case, drops, home, months, second, failpoint=point)
                left = _compare(fingerprint(case), before, after)
                leftovers = staging_tables(case)
                heal = run_month(case, drops, home, months, second)
                healed = heal.returncode == 0 and fingerprint(case) == after
                remaining = staging_tables(case)
            problems = []
            if not killed.killed:
                problems.append(f"the run was not killed (exit {killed.returncode})")
            for part in PARTS:
                expected = "new" if part in NEW_AFTER_KILL[point] else "as before"
                if left[part] != expected:
                    problems.append(f"{part} {left[part]} after the kill, expected {expected}")
            if not healed:
                problems.append(f"not healed by the re-run (exit {heal.returncode})")
            if remaining:
                problems.append(f"staging tables left after the re-run: {remaining}")
            marked = _killed_run_failed(home)
            if not marked:
                problems.append("the killed run is not marked failed")
            yield FaultOutcome(point, killed, left, leftovers, heal, healed, marked, problems)


def _killed_run_failed(home: Path) -> bool:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        statuses = [r.status for r in instance.get_runs()]
    # Newest first: the re-run succeeded, the killed one before it is marked failed.
    return statuses[:2] == [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]


def main(partition: str) -> int:
    """One month of FAULT_GROUPS through the instance in DAGSTER_HOME (the faults' child)."""
    import dagster as dg

    from streamflow_assets.runs import failure_text, materialize_month

    with dg.DagsterInstance.get() as instance:
        result = materialize_month(
            partition, selection=dg.AssetSelection.groups(*FAULT_GROUPS), instance=instance
        )
    for event in result.get_step_failure_events():
        print(f"{event.step_key}: {failure_text(event)}", file=sys.stderr)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))


def bench_faults(users: int, seed: int, drops: Path | None) -> None:
    """Print, per failpoint: how long the run took to reach it, what the kill left (each part of
    the state, the staging tables and their size), and the re-run that healed it."""
    from streamflow_assets.db import database_url
    from streamflow_assets.months import partition_key
    from streamflow_assets.settings import Settings, add_months
    from streamflow_bench.benchmarks import bench_drops

    settings = Settings.from_env()
    months = tuple(partition_key(add_months(settings.first_month, i)) for i in range(2))
    with contextlib.ExitStack() as stack:
        drops = bench_drops(stack, drops, users, 2, seed)
        server = database_url(settings)
        print(
            f"killing the run of {months[1]} (groups {', '.join(FAULT_GROUPS)}) at each failpoint, "
            f"on a copy of a database holding {months[0]}; then running {months[1]} again\n"
        )
        header = (
            f"{'failpoint':18s} {'killed at (s)':>13s}  {'live tables':11s} {'snapshots':9s} "
            f"{'online':9s} {'left in staging':>16s} {'re-run (s)':>10s}  result"
        )
        print(header)
        failures = 0
        for o in fault_scenarios(server, drops, months):
            staged = sum(size for _, size in o.leftovers)
            print(
                f"{o.failpoint:18s} {o.killed.seconds:13.1f}  {o.left['live tables']:11s} "
                f"{o.left['snapshots']:9s} {o.left['online store']:9s} "
                f"{f'{len(o.leftovers)} ({staged / 2**20:,.0f} MB)':>16s} {o.heal.seconds:10.1f}  "
                + ("healed" if o.ok else "; ".join(o.problems)),
                flush=True,
            )
            failures += not o.ok
        print(
            "\n'new': as after a clean run of the month; 'as before': as before it started. "
            "Healed: the re-run ends exactly as a clean run, no staging table left, the killed "
            "run marked failed."
        )
        with database(server, "sf_faults_locks") as url:
            f = lock_figures(url)
        print(
            f"\nA reader holding a table for {f.held:.1f} s while a swap wants it: the swap "
            f"waited {f.swap_seconds:.1f} s ({f.swap_attempts} attempts of 100 ms); "
            f"{f.reads_while_held} reads of the table meanwhile, the slowest "
            f"{f.slowest_read_ms:.0f} ms.\n"
            f"A client killed inside its transaction while waiting for a lock: its session ended "
            f"{f.dead_session_gone_after:.2f} s later; a reader of the table it had locked got "
            f"its answer {f.blocked_read_waited:.2f} s after the kill."
        )
        if failures:
            raise SystemExit(f"{failures} failpoint(s) not healed")


# ---- locks: a long reader and a dead client ----------------------------------------------------

WAIT_INSIDE_A_PUBLISH = """
import sys
import sqlalchemy as sa
from streamflow_assets.db import get_engine
from streamflow_assets.settings import Settings

with get_engine(Settings.from_env()).begin() as conn:
    conn.execute(sa.text("LOCK TABLE sf_probe_a IN ACCESS EXCLUSIVE MODE"))
    print(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar(), flush=True)
    conn.execute(sa.text("LOCK TABLE sf_probe_b IN ACCESS EXCLUSIVE MODE"))  # a reader holds it
"""
"""A project client inside a publish: one table's lock taken, waiting for the next one's."""


@dataclass
class LockFigures:
    held: float
    """Seconds a long reader held the table the swap needed."""
    swap_attempts: int
    swap_seconds: float
    reads_while_held: int
    slowest_read_ms: float
    dead_session_gone_after: float
    """Seconds from killing a client waiting inside its transaction to its session's end."""
    blocked_read_waited: float
    """Seconds a reader of the dead client's locked table waited, from the kill."""


def lock_figures(url: URL, hold: float = 5.0) -> LockFigures:
    """Measure on this database, with the project's own engine and swap: a reader holding a
    table for `hold` seconds while a swap wants it (how long the swap waits, and whether other
    readers get through meanwhile), then a client killed inside its transaction while it waits
    for a lock (how long its session, and the locks it holds, outlive it)."""
    import threading

    import sqlalchemy as sa

    from streamflow_assets.db import get_engine
    from streamflow_assets.settings import DATABASE_URL_VAR, Settings
    from streamflow_assets.sql import swap_with_retries

    engine = get_engine(Settings.from_values({DATABASE_URL_VAR: libpq_url(url)}))
    try:
        with engine.begin() as conn:
            for table in ("sf_probe_a", "sf_probe_b"):
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
                conn.execute(sa.text(f"CREATE TABLE {table} AS SELECT 1 AS x"))

        def read(table: str) -> float:
            started = time.perf_counter()
            with engine.connect() as conn:
                conn.execute(sa.text(f"SELECT count(*) FROM {table}"))
            return time.perf_counter() - started

        swapped = []
        with engine.connect() as long_reader:
            long_reader.execute(sa.text("SELECT count(*) FROM sf_probe_b"))  # held until rollback
            swap = threading.Thread(
                target=lambda: swapped.append(
                    swap_with_retries(
                        engine,
                        lambda c: c.execute(
                            sa.text("LOCK TABLE sf_probe_b IN ACCESS EXCLUSIVE MODE")
                        ),
                        what="the probe",
                    )
                )
            )
            started = time.perf_counter()
            swap.start()
            reads = []
            while time.perf_counter() - started < hold:
                reads.append(read("sf_probe_b"))
                time.sleep(0.02)
            held = time.perf_counter() - started
            long_reader.rollback()
        swap.join()

        env = {**os.environ, DATABASE_URL_VAR: libpq_url(url)}
        watching = engine.execution_options(isolation_level="AUTOCOMMIT")  # a fresh view each time
        with engine.connect() as long_reader, watching.connect() as watch:
            long_reader.execute(sa.text("SELECT count(*) FROM sf_probe_b"))
            client = subprocess.Popen(
                [sys.executable, "-c", WAIT_INSIDE_A_PUBLISH],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            backend = int(client.stdout.readline())
            state = sa.text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :p")
            while watch.execute(state, {"p": backend}).scalar() != "Lock":
                time.sleep(0.01)
            blocked = []
            reader = threading.Thread(
                target=lambda: blocked.append((read("sf_probe_a"), time.perf_counter()))
            )
            reader.start()
            time.sleep(0.2)
            client.kill()
            client.wait()
            killed = time.perf_counter()
            while watch.execute(state, {"p": backend}).first() is not None:
                time.sleep(0.01)
            gone = time.perf_counter() - killed
            reader.join()
            blocked_waited = blocked[0][1] - killed
            long_reader.rollback()
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE sf_probe_a, sf_probe_b"))
    finally:
        engine.dispose()
    return LockFigures(
        held=held,
        swap_attempts=swapped[0].attempts,
        swap_seconds=swapped[0].seconds_waiting,
        reads_while_held=len(reads),
        slowest_read_ms=max(reads) * 1000,
        dead_session_gone_after=gone,
        blocked_read_waited=blocked_waited,
    )
