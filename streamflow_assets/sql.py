"""SQL plumbing, one way each: quoting, COPY in and out, swapping a built table in, locks.

Identifiers only ever come from the table specs, Feast's definitions and partition keys that have
been validated; values are bound parameters (or, where PostgreSQL takes none — COPY, DDL — quoted
as literals by psycopg).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Generic, TypeVar

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import Connection, Engine

from streamflow_assets.report import Markdown, markdown_table

COPY_CHUNK = 1 << 20
T = TypeVar("T")


def ident(*parts: str) -> str:
    """A quoted, optionally schema-qualified identifier: ident("drops", "users_2024_01")."""
    return sql.Identifier(*parts).as_string()


def hash_sum(expression: str, where: str | None = None) -> str:
    """SQL for the sum of a text expression's 64-bit hashes over the rows (those that meet
    `where`), exact (numeric) and 0 over none. With the rows' count it is a digest of the set of
    values: two sets with the same digest are the same set, barring a 64-bit collision, and the
    digest of a set minus that of a subset is the digest of the rest."""
    only = f" FILTER (WHERE {where})" if where else ""
    return f"coalesce(sum(hashtextextended({expression}, 0)){only}, 0)"


def literal(value: object) -> str:
    """A constant as an SQL literal, for statements that take no parameters (COPY, DDL, GX)."""
    return sql.Literal(value).as_string()


def inline(engine: Engine | Connection, query: str, params: dict) -> str:
    """A query with its bind parameters rendered as literals (COPY takes none)."""
    statement = sa.text(query).bindparams(**params)
    return str(statement.compile(engine, compile_kwargs={"literal_binds": True}))


def copy_in(
    conn: Connection,
    table: str,
    columns: Sequence[str],
    data: Iterable[bytes] | bytes,
    *,
    header: bool = False,
) -> None:
    """COPY CSV data (one buffer, or chunks such as a file's) into `table` (already quoted)."""
    cols = ", ".join(ident(c) for c in columns)
    options = "FORMAT csv, HEADER true" if header else "FORMAT csv"
    driver: psycopg.Connection = conn.connection.driver_connection
    with (
        driver.cursor() as cur,
        cur.copy(f"COPY {table} ({cols}) FROM STDIN WITH ({options})") as cp,
    ):
        for chunk in [data] if isinstance(data, bytes | bytearray) else data:
            cp.write(chunk)


def file_chunks(path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(COPY_CHUNK):
            yield chunk


def copy_out_chunks(conn: Connection, query: str) -> Iterator[bytes]:
    """The result of a query as CSV without a header (COPY ... TO STDOUT), as PostgreSQL sends
    it: whole rows."""
    driver: psycopg.Connection = conn.connection.driver_connection
    with (
        driver.cursor() as cur,
        cur.copy(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)") as cp,
    ):
        yield from cp


def replace_table(
    conn: Connection,
    built: tuple[str, str],
    target: tuple[str, str],
    *,
    primary_key: tuple[str, str] | None = None,
) -> None:
    """Swap a table built beside its target in: drop the target, move the built table to the
    target's schema and name. Inside the caller's transaction, so readers see the old table or
    the new one, never a mix. `primary_key` = (built's constraint name, target's) renames it."""
    (built_schema, built_name), (schema, name) = built, target
    conn.execute(sa.text(f"DROP TABLE IF EXISTS {ident(schema, name)}"))
    if built_name != name:
        conn.execute(
            sa.text(f"ALTER TABLE {ident(built_schema, built_name)} RENAME TO {ident(name)}")
        )
    if built_schema != schema:
        conn.execute(sa.text(f"ALTER TABLE {ident(built_schema, name)} SET SCHEMA {ident(schema)}"))
    if primary_key is not None:
        old, new = primary_key
        conn.execute(
            sa.text(
                f"ALTER TABLE {ident(schema, name)} RENAME CONSTRAINT {ident(old)} TO {ident(new)}"
            )
        )


NO_AUTOVACUUM = "WITH (autovacuum_enabled = false)"
"""For a table written once by its builder, which analyzes it, and never updated in place (a
month's record, snapshot partition, live or online table built beside its target and swapped
in): autovacuum has nothing to do there but cost. At 10M users an autovacuum holding a staged
table starved the swap, whose short `LOCK_TIMEOUT` gives up before PostgreSQL cancels the
autovacuum for a waiting lock (at deadlock_timeout, 1 s): the month's online publish retried 130
times over 197 s behind a VACUUM of a 60M-row staged table. And the insert-triggered VACUUM
ANALYZE of each ten-million-row month table ran beside the next steps on two cores. (PostgreSQL
still runs its anti-wraparound vacuum on these tables when they need it.)"""

LOCK_TIMEOUT = timedelta(milliseconds=100)
"""How long a swap waits for its tables' locks per attempt: well under PostgreSQL's
deadlock_timeout (1 s), so a reader caught between two of the swap's tables makes the swap give
way, instead of the deadlock detector cancelling the reader."""


@dataclass(frozen=True)
class Swapped(Generic[T]):
    result: T
    attempts: int
    seconds_waiting: float


def swap_with_retries(
    engine: Engine,
    work: Callable[[Connection], T],
    *,
    what: str,
    lock_timeout: timedelta = LOCK_TIMEOUT,
    give_up_after: timedelta = timedelta(minutes=10),
) -> Swapped[T]:
    """Run `work` in one transaction whose lock waits are bounded by `lock_timeout`; when a lock
    is not granted in time, roll back, back off and try again, for up to `give_up_after`.

    An exclusive lock request queues every later reader behind it: a long reader would stall
    them all for as long as it runs. Waiting briefly, then letting go, lets readers through
    meanwhile — a long reader delays the swap but never wedges the tables."""
    started = time.monotonic()
    for attempt in itertools.count(1):
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(f"SET LOCAL lock_timeout = '{_ms(lock_timeout)}ms'"))
                result = work(conn)
            return Swapped(result, attempt, round(time.monotonic() - started, 3))
        except sa.exc.OperationalError as exc:
            if not isinstance(exc.orig, psycopg.errors.LockNotAvailable):
                raise
            if time.monotonic() - started > give_up_after.total_seconds():
                raise TimeoutError(
                    f"{what}: readers kept the tables locked for {give_up_after} "
                    f"({attempt} attempts)"
                ) from None
            time.sleep(min(0.05 * 2**attempt, 2.0) * random.uniform(0.5, 1.0))
    raise AssertionError("unreachable")


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


def table_exists(conn: Connection, schema: str, name: str) -> bool:
    found = conn.execute(
        sa.text("SELECT to_regclass(:qualified) IS NOT NULL"), {"qualified": ident(schema, name)}
    )
    return bool(found.scalar_one())


@contextlib.contextmanager
def advisory_lock(engine: Engine, key: str) -> Iterator[None]:
    """Hold a named lock across transactions: another holder of the same key waits here.

    A session-level advisory lock on a connection of its own, released by PostgreSQL if the
    process dies.
    """
    with engine.connect() as conn:
        params = {"key": f"streamflow:{key}"}
        conn.execute(sa.text("SELECT pg_advisory_lock(hashtextextended(:key, 0))"), params)
        conn.commit()
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(hashtextextended(:key, 0))"), params)
            conn.commit()


def first_rows(conn: Connection, table: str, rows: int = 5) -> Markdown:
    """The first rows of a table (by user_id) as a markdown table."""
    result = conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY user_id LIMIT {int(rows)}"))
    return markdown_table(list(result.keys()), list(result))


BACKGROUND_NICE = 10
BACKGROUND_CPUS_OPTION = "streamflow_background_cpus"
"""The engine option (`Engine.execution_options`) holding the CPUs its background sessions may use
together (the setting STREAMFLOW_BACKGROUND_CPUS)."""
CPU_GROUP = "streamflow-background"
CPU_PERIOD_US = 20_000
"""The cgroup's accounting period: the limited work runs in slices of at most (CPUs x 20 ms) and
then waits for the period to end, short enough that a request arriving meanwhile barely notices."""


@contextlib.contextmanager
def background_session(engine: Engine) -> Iterator[Connection]:
    """A transaction whose server process runs at a lower CPU priority (nice 10, Linux's idle
    policy) when the server runs on this machine and lets us renice it (the embedded
    PostgreSQL, a local one as the same user or as root): bulk work then yields the CPU to the
    queries of people waiting for answers. With a CPU limit on the engine (the
    `BACKGROUND_CPUS_OPTION`), the process also joins a cgroup that holds every background
    session to that much CPU time, where cgroups are ours to make (root). Elsewhere it is an
    ordinary transaction. No parallel workers (processes of their own, which would run at
    normal priority). The session is closed afterwards, not pooled: a process cannot raise
    its priority back."""
    with engine.connect() as conn:
        try:
            with conn.begin():
                conn.info[HELD_BACK] = _hold_back(conn)
                conn.execute(sa.text("SET LOCAL max_parallel_workers_per_gather = 0"))
                conn.execute(sa.text("SET LOCAL max_parallel_maintenance_workers = 0"))
                yield conn
        finally:
            conn.invalidate()


HELD_BACK = "streamflow: held back"
"""The key of a background session's `Connection.info` that says how it was held back."""


def _hold_back(conn: Connection) -> str:
    """Lower the session's server process's priority and, with a CPU limit on the engine, put it
    in the limit's cgroup; what was done, in words."""
    pid = lower_server_priority(conn)
    if pid is None:
        return "none: the server is not a process of this machine that we may renice"
    cpus = conn.get_execution_options().get(BACKGROUND_CPUS_OPTION)
    if cpus is None:
        return "none (nice and the idle policy only)"
    return limit_server_cpu(pid, cpus)


def lower_server_priority(conn: Connection) -> int | None:
    """Renice this session's server process, if it is a process of this machine; its pid when
    it was, None otherwise. The process is identified by its pid and checked by its title, which
    names this session's client address and port (a server in a container has pids of its own)."""
    pid = _local_server_pid(conn)
    if pid is None:
        return None
    try:
        os.setpriority(os.PRIO_PROCESS, pid, BACKGROUND_NICE)
    except OSError:  # not ours to renice, gone
        return None
    with contextlib.suppress(OSError, AttributeError):
        # Linux's idle policy on top: a waking reader's process runs at once instead of after
        # the bulk process's time slice (nice alone shares the CPU, not the wake-up latency).
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
    return pid


def _local_server_pid(conn: Connection) -> int | None:
    pid, client = conn.execute(
        sa.text(
            "SELECT pg_backend_pid(), host(inet_client_addr()) || '(' || inet_client_port() || ')'"
        )
    ).one()
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:  # no /proc (not Linux), gone
        return None
    if not title.startswith("postgres:") or (client is not None and client not in title):
        return None
    return pid


def limit_server_cpu(pid: int, cpus: float) -> str:
    """Put a session's server process (`pid`, a process of this machine) in the cgroup that
    holds background sessions to `cpus` CPUs together; where it went, or why it could not.

    Nice and the idle policy are not enough on a small machine: even work at the idle policy
    doubles the API's p99 on two cores (shared caches, and on a virtual machine the host's
    scheduling of its vCPUs), while the same work in slices of a few milliseconds does not."""
    procs, where = cpu_group(cpus)
    not_applied = f"{cpus:g} CPU asked, not applied"
    if procs is None:
        return f"{not_applied}: {where}"
    try:
        procs.write_text(str(pid))
    except OSError as exc:
        return f"{not_applied}: {procs} not writable ({exc.strerror})"
    return where


def background_cpu_limit(engine: Engine) -> str:
    """What holds the engine's background sessions back, for a run's metadata: asked of a
    background session of its own, which is held back as every one of them is (the setting alone
    would not say whether the server is a process of this machine, or the cgroup ours)."""
    with background_session(engine) as conn:
        return conn.info[HELD_BACK]


def cpu_group(cpus: float) -> tuple[Path | None, str]:
    """The cgroup (its process list) whose processes together get at most `cpus` CPUs, made or
    updated (the last session's limit holds for all), and a description; (None, why) where there
    is none to use: cgroup v2 with the cpu controller, or v1's cpu hierarchy, writable by us."""
    quota = max(1000, round(cpus * CPU_PERIOD_US))
    root = Path("/sys/fs/cgroup")
    try:
        if (root / "cgroup.controllers").is_file():  # v2
            if "cpu" not in (root / "cgroup.controllers").read_text().split():
                return None, "cgroup v2 without its cpu controller"
            if "cpu" not in (root / "cgroup.subtree_control").read_text().split():
                (root / "cgroup.subtree_control").write_text("+cpu")
            group = root / CPU_GROUP
            group.mkdir(exist_ok=True)
            (group / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}")
        elif (root / "cpu" / "cpu.cfs_quota_us").is_file():  # v1
            group = root / "cpu" / CPU_GROUP
            group.mkdir(exist_ok=True)
            (group / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            return None, "no cgroup cpu controller on this machine"
    except OSError as exc:
        return None, f"cgroups not writable here ({exc.strerror}; root can)"
    return group / "cgroup.procs", f"{cpus:g} CPU (cgroup {group})"
