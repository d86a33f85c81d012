"""Publishing a validated drop: the month's records and the next version of each live table.

Nearly every subscriber changes every month, so updating the live tables row by row (INSERT ... ON
CONFLICT DO UPDATE, or MERGE) rewrites every row through the primary key: 10-11 s per 1M-row table
on the reference machine. Instead each live table's next version is built set-based — the current
rows that stay (users absent from the month, or whose row came from a newer month) plus the month's
rows — and swapped in. The builds run in parallel while the drop holds every live table's publish
lock; the swap of all tables is one short transaction, so a drop is published whole or not at all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from streamflow_assets.failpoints import failpoint
from streamflow_assets.sql import (
    NO_AUTOVACUUM,
    advisory_lock,
    ident,
    replace_table,
    swap_with_retries,
)
from streamflow_assets.table_specs import TableSpec
from streamflow_assets.warehouse import DROPS_SCHEMA, STAGING_SCHEMA, month_table

BUILD_THREADS = 2


@dataclass
class PublishedTable:
    spec: TableSpec
    inserted: int
    updated: int
    unchanged: int
    skipped_as_older: int
    live_rows: int


def _next_name(typed: str) -> str:
    return f"{typed}_next"


def _build_next(engine: Engine, spec: TableSpec, typed: str, as_of: date) -> PublishedTable:
    """Build the live table's next version beside it, and count what changes."""
    live, month = ident(spec.name), ident(STAGING_SCHEMA, typed)
    nxt = ident(STAGING_SCHEMA, _next_name(typed))
    columns = [ident(c.name) for c in spec.columns]
    values = [ident(c.name) for c in spec.columns if c.name not in spec.primary_key]
    params = {"as_of": as_of}
    with engine.begin() as conn:
        live_before, newest = conn.execute(
            sa.text(f"SELECT count(*), max(as_of) FROM {live}")
        ).one()
        staged = conn.execute(sa.text(f"SELECT count(*) FROM {month}")).scalar_one()
        # A month newer than every live row replaces each row it has: the counts follow from row
        # counts. Only a re-run or an older month needs the comparison join.
        compare = newest is not None and newest >= as_of
        if compare:
            inserted, updated, older = conn.execute(
                sa.text(
                    f"""
                    SELECT count(*) FILTER (WHERE l.user_id IS NULL),
                           count(*) FILTER (WHERE l.as_of < :as_of OR (l.as_of = :as_of AND
                               ROW({", ".join(f"l.{v}" for v in values)})
                               IS DISTINCT FROM ROW({", ".join(f"m.{v}" for v in values)}))),
                           count(*) FILTER (WHERE l.as_of > :as_of)
                    FROM {month} AS m LEFT JOIN {live} AS l USING (user_id)"""
                ),
                params,
            ).one()
        kept_rows = f"SELECT {', '.join(f'l.{c}' for c in columns)}, l.as_of FROM {live} AS l"
        month_rows = f"SELECT {', '.join(f'm.{c}' for c in columns)}, :as_of FROM {month} AS m"
        if compare:  # each user's newer row wins
            rows = f"""
                {kept_rows} LEFT JOIN {month} AS m USING (user_id)
                WHERE m.user_id IS NULL OR l.as_of > :as_of
                UNION ALL
                {month_rows} LEFT JOIN {live} AS l USING (user_id)
                WHERE l.user_id IS NULL OR l.as_of <= :as_of"""
        else:  # the month is newer than every live row: all of it, and the users it lacks
            rows = f"""
                {kept_rows} WHERE NOT EXISTS (SELECT FROM {month} AS m WHERE m.user_id = l.user_id)
                UNION ALL
                {month_rows}"""
        conn.execute(sa.text(f"CREATE TABLE {nxt} (LIKE {live}) {NO_AUTOVACUUM}"))
        live_rows = conn.execute(
            sa.text(f"INSERT INTO {nxt} ({', '.join(columns)}, as_of) {rows}"), params
        ).rowcount
        keys = ", ".join(ident(k) for k in spec.primary_key)
        conn.execute(
            sa.text(
                f"ALTER TABLE {nxt} ADD CONSTRAINT {ident(_next_name(typed) + '_pkey')} "
                f"PRIMARY KEY ({keys})"
            )
        )
        conn.execute(sa.text(f"ANALYZE {nxt}"))  # autovacuum never will (NO_AUTOVACUUM)
    if not compare:
        inserted, older = live_rows - live_before, 0
        updated = staged - inserted
    return PublishedTable(
        spec,
        inserted=inserted,
        updated=updated,
        unchanged=staged - inserted - updated - older,
        skipped_as_older=older,
        live_rows=live_rows,
    )


def _swap(conn: sa.Connection, spec: TableSpec, typed: str, target: str) -> None:
    """Inside the publish transaction: make the staged tables the month record and live table."""
    replace_table(conn, (STAGING_SCHEMA, typed), (DROPS_SCHEMA, target))
    nxt = _next_name(typed)
    replace_table(
        conn,
        (STAGING_SCHEMA, nxt),
        ("public", spec.name),
        primary_key=(f"{nxt}_pkey", f"{spec.name}_pkey"),
    )


@contextlib.contextmanager
def _publish_locks(engine: Engine, specs: Sequence[TableSpec]) -> Iterator[None]:
    """Every live table's publish lock, taken in the specs' fixed order (no deadlock)."""
    with contextlib.ExitStack() as stack:
        for spec in specs:
            stack.enter_context(advisory_lock(engine, f"publish:{spec.name}"))
        yield


def publish_drop(
    engine: Engine, staged: Sequence[tuple[TableSpec, str]], partition: str, as_of: date
) -> dict[str, PublishedTable]:
    """Publish validated staging tables (spec, typed table) of one month, all or nothing."""
    specs = [spec for spec, _ in staged]
    with _publish_locks(engine, specs):
        try:
            with ThreadPoolExecutor(BUILD_THREADS) as pool:
                built = list(
                    pool.map(lambda item: _build_next(engine, item[0], item[1], as_of), staged)
                )
            failpoint("ingest.built")

            def swap(conn: sa.Connection) -> None:
                for i, (spec, typed) in enumerate(staged):
                    _swap(conn, spec, typed, month_table(spec, partition))
                    if i == len(staged) // 2:
                        failpoint("ingest.swapping")

            swap_with_retries(engine, swap, what=f"publishing {partition}")
            failpoint("ingest.published")
        except BaseException:
            with engine.begin() as conn:
                for _, typed in staged:
                    conn.execute(
                        sa.text(f"DROP TABLE IF EXISTS {ident(STAGING_SCHEMA, _next_name(typed))}")
                    )
            raise
    return {table.spec.name: table for table in built}
