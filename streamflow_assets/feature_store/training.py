"""The point-in-time-correct training set of a month (the `training_dataset` asset's work).

Entity rows are the users of labels_snapshots M at M's as_of; features are the `churn_features`
service's, with Feast's point-in-time semantics (per feature view, the newest row at or before
the entity timestamp and within the view's ttl); the label is month M's churn_label.

Feast's `get_historical_features` on PostgreSQL builds one generic query for any entity rows
(1M rows: 51 s with one month of snapshots, 77 s with two, growing with history). Here every
entity row has the same timestamp, and the service's views read snapshot tables, which hold one
row per user and month: per view the answer is the user's row in month M's partition, and only
a user missing from it is looked up in the older months inside the ttl (`_snapshot_join`), so
the query reads one partition per view however many months are loaded. The views are merge-joined
in byte order and streamed out with COPY; the on-demand features then go through Feast's own
`transform_arrow`, as in Feast's retrieval. The tests compare the result with
`get_historical_features`, value for value, users missing from a month included.

The month is built, checked and written a block of COPY's output at a time (`training_blocks`),
so a month of 10M users needs no more memory than one of 10k; the query and the CSV writer each
run in a thread of their own, beside the on-demand transform.
"""

import collections
import contextlib
import csv
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlalchemy as sa
from feast import FeatureService, FeatureStore, FeatureView, OnDemandFeatureView
from feast.types import Bool, Float64, Int64, String
from sqlalchemy.engine import Connection, Engine

from streamflow_assets.adapters.evidently import import_ahead
from streamflow_assets.checks import (
    LABEL_RATE_IN_RANGE,
    NO_UNEXPECTED_NULL_FEATURE,
    ONE_ROW_PER_SNAPSHOT_USER,
)
from streamflow_assets.feature_store.fields import NULLABLE_TAG
from streamflow_assets.feature_store.repo import FEATURE_SERVICE
from streamflow_assets.files import atomic_write
from streamflow_assets.monitoring import (
    feature_drift,
    keep_sample,
    kept_sample,
    read_sample,
    rows_of,
    sample_rows,
    take_rows,
)
from streamflow_assets.months import as_of, event_timestamp, previous_month
from streamflow_assets.report import CheckOutcome, StepRefused, StepResult, markdown_table
from streamflow_assets.sql import copy_out_chunks, ident, inline, literal
from streamflow_assets.streams import read_ahead
from streamflow_assets.table_specs import LABELS, SNAPSHOT_TABLES

SNAPSHOT_NAMES = {spec.snapshot.name for spec in SNAPSHOT_TABLES}
LABEL = "churn_label"
LABEL_RATE_RANGE = (0.01, 0.99)
ENTITY_TIMESTAMP = "event_timestamp"

_ARROW_TYPES = {Int64: pa.int64(), Float64: pa.float64(), Bool: pa.bool_(), String: pa.string()}


def training_path(output_dir: Path, partition: str) -> Path:
    return output_dir / f"training_df_{as_of(partition).isoformat()}.csv"


def training_table(
    engine: Engine, store: FeatureStore, partition: str, users: Sequence[str] | None = None
) -> pa.Table:
    """The training rows of a month: user_id, event_timestamp, every feature of the service
    (on-demand ones included), churn_label; ordered by user_id. Only `users`' rows if given."""
    return pa.concat_tables(training_blocks(engine, store, partition, users))


def training_blocks(
    engine: Engine, store: FeatureStore, partition: str, users: Sequence[str] | None = None
) -> Iterator[pa.Table]:
    """`training_table`'s rows a block at a time (`BLOCK_BYTES` of CSV from PostgreSQL each), in
    order, so a month of any size is built in bounded memory; at least one block, maybe empty."""
    service = store.get_feature_service(FEATURE_SERVICE)
    on_demand = {v.name: v for v in store.list_on_demand_feature_views()}
    ts = event_timestamp(partition)
    selects, joins = [], []

    def only(column: str, prefix: str = "") -> str:
        """The filter to `users`, applied inside each view's subquery too (a DISTINCT ON does
        not let PostgreSQL push the join's filter down)."""
        if users is None:
            return ""
        return f" AND {prefix}{ident(column)} IN ({', '.join(map(literal, users))})"

    params: dict = {"ts": ts, "as_of": as_of(partition)}
    views = [p for p in service.feature_view_projections if p.name not in on_demand]
    with engine.connect() as conn:  # the views' questions; closed before the query runs
        for i, projection in enumerate(views):
            view = store.get_feature_view(projection.name)
            names = [f.name for f in projection.features]
            alias = f"fv{i}"
            params[f"{alias}_from"] = ts - view.ttl if view.ttl else datetime.min
            if view.batch_source.get_table_query_string() in SNAPSHOT_NAMES:
                first_day = params[f"{alias}_from"].date() if view.ttl else date.min
                older = _has_months_between(conn, view, first_day, params["as_of"])
                if older:
                    params[f"{alias}_first_day"] = first_day
                join, values = _snapshot_join(view, names, alias, only, older_months=older)
            else:
                join, values = _source_join(view, names, alias, only)
            joins.append(join)
            selects += values
    labels = ident(LABELS.snapshot.name)
    # Users are sorted and merged in byte order (COLLATE "C"), not the database's collation:
    # PostgreSQL compares text in any other collation through the C library (strcoll), which
    # made the four views' sorts half of the month's query (1M users: 17.9 -> 8.8 s), and the
    # CSV's rows come in the same order from every server.
    query = (
        f"SELECT e.user_id, {', '.join(selects)}, e.{ident(LABEL)} "
        f"FROM {labels} e {' '.join(joins)} WHERE e.as_of = :as_of"
        + only("user_id", "e.")
        + ' ORDER BY e.user_id COLLATE "C"'
    )
    # The query's columns: the training set's but the event timestamp and the on-demand
    # features, which are added to each block below.
    added = {ENTITY_TIMESTAMP} | {
        f.name for p in service.feature_view_projections if p.name in on_demand for f in p.features
    }
    columns = {n: kind for n, kind in training_columns(store).items() if n not in added}
    # PostgreSQL produces the next blocks (and Arrow parses them) while this thread transforms
    # and writes the last one.
    blocks = _copy_out_blocks(engine, inline(engine, query, params), columns)
    for table in read_ahead(blocks, name="training-query"):
        table = table.add_column(
            1, ENTITY_TIMESTAMP, pa.array([ts] * table.num_rows, pa.timestamp("us", tz="UTC"))
        )
        yield _with_on_demand_features(on_demand, service, table)


def _source_join(
    view: FeatureView, names: list[str], alias: str, only: Callable[[str], str]
) -> tuple[str, list[str]]:
    """Any source: per user, the newest row at or before :ts and within the ttl (from
    :<alias>_from), one `DISTINCT ON` over the window."""
    (join_key,) = view.join_keys
    source_ts = ident(view.batch_source.timestamp_field)
    join = (
        f'LEFT JOIN (SELECT DISTINCT ON (k) {ident(join_key)} COLLATE "C" AS k, '
        f"{', '.join(ident(n) for n in names)} FROM {view.batch_source.get_table_query_string()} "
        f"WHERE {source_ts} <= :ts AND {source_ts} >= :{alias}_from{only(join_key)} "
        f'ORDER BY k, {source_ts} DESC) {alias} ON {alias}.k = e.user_id COLLATE "C"'
    )
    return join, [f"{alias}.{ident(n)}" for n in names]


def _snapshot_join(
    view: FeatureView,
    names: list[str],
    alias: str,
    only: Callable[[str], str],
    *,
    older_months: bool,
) -> tuple[str, list[str]]:
    """A snapshot table: the same rows as `_source_join`, without reading history. A snapshot
    holds one row per user and month, stamped with the month's as_of, so the newest row inside
    the window is the user's row of month M (partition as_of = :as_of) when there is one. Only
    users missing from it (a drop may leave a user out of a file) look further back, one index
    lookup per column into the older months inside the window (:<alias>_first_day on), when
    there are `older_months`: a month's query reads one partition per view however many months are
    loaded."""
    (join_key,) = view.join_keys
    source_ts = ident(view.batch_source.timestamp_field)
    table = view.batch_source.get_table_query_string()
    window = f"{source_ts} <= :ts AND {source_ts} >= :{alias}_from"
    columns = ", ".join(ident(n) for n in names)
    join = (
        f'LEFT JOIN (SELECT {ident(join_key)} COLLATE "C" AS k, {columns} FROM {table} '
        f"WHERE as_of = :as_of AND {window}{only(join_key)}) {alias} "
        f'ON {alias}.k = e.user_id COLLATE "C"'
    )
    if not older_months:
        return join, [f"{alias}.{ident(n)}" for n in names]
    # PostgreSQL evaluates a subquery inside CASE only when its branch is taken: a user found
    # in month M costs nothing here.
    older = (
        f"FROM {table} WHERE {ident(join_key)} = e.user_id AND as_of >= :{alias}_first_day "
        f"AND as_of < :as_of AND {window} ORDER BY as_of DESC LIMIT 1"
    )
    values = [
        f"CASE WHEN {alias}.k IS NULL THEN (SELECT {ident(n)} {older}) ELSE {alias}.{ident(n)} END"
        for n in names
    ]
    return join, values


def _has_months_between(conn: Connection, view: FeatureView, first_day: date, as_of: date) -> bool:
    """Whether the view's snapshot table holds a month from `first_day` up to (not including)
    `as_of` (PostgreSQL looks only at those months' partitions)."""
    return conn.execute(
        sa.text(
            f"SELECT EXISTS (SELECT FROM {view.batch_source.get_table_query_string()} "
            "WHERE as_of >= :first_day AND as_of < :as_of)"
        ),
        {"first_day": first_day, "as_of": as_of},
    ).scalar_one()


def _with_on_demand_features(
    on_demand: dict[str, OnDemandFeatureView], service: FeatureService, table: pa.Table
) -> pa.Table:
    label = table.column(LABEL)
    table = table.drop_columns([LABEL])
    for projection in service.feature_view_projections:
        if projection.name not in on_demand:
            continue
        view = on_demand[projection.name]
        inputs = [f.name for p in view.source_feature_view_projections.values() for f in p.features]
        transformed = view.transform_arrow(table.select(inputs), False)
        for field in projection.features:
            table = table.append_column(field.name, transformed[field.name])
    return table.append_column(LABEL, label)


BLOCK_BYTES = 8 << 20
"""CSV bytes parsed at once: a run process holds about 20 times this, whatever the month's size
(8 MB: +170 MB at 1M users, against +830 MB for the month in one piece)."""


def _copy_out_blocks(
    engine: Engine, query: str, types: dict[str, pa.DataType]
) -> Iterator[pa.Table]:
    """Run a query with COPY ... TO STDOUT and parse its CSV with Arrow, BLOCK_BYTES at a time
    (PostgreSQL sends whole rows, so a block ends where a row does); at least one block."""
    options = {
        "read_options": pa_csv.ReadOptions(column_names=list(types)),
        "convert_options": pa_csv.ConvertOptions(
            column_types=types, true_values=["t"], false_values=["f"], strings_can_be_null=True
        ),
    }

    def parse(block: bytearray) -> pa.Table:
        if not block:
            return pa.schema(types.items()).empty_table()
        return pa_csv.read_csv(pa.py_buffer(block), **options)

    with engine.connect() as conn:
        conn.execute(sa.text("SET work_mem = '256MB'"))
        conn.execute(sa.text("SET TIME ZONE 'UTC'"))
        # Compiling the month's query took longer than it saved (1M users: 0.5 s of 6).
        conn.execute(sa.text("SET jit = off"))
        block, sent = bytearray(), False
        for rows in copy_out_chunks(conn, query):
            block += rows
            if len(block) >= BLOCK_BYTES:
                yield parse(block)
                block, sent = bytearray(), True
        if block or not sent:
            yield parse(block)
        conn.rollback()


CSV_CHUNK_ROWS = 200_000
CSV_READ_BYTES = 16 << 20
"""CSV bytes Arrow parses at a time (on every core) while a training CSV is read back."""


def training_columns(store: FeatureStore) -> dict[str, pa.DataType]:
    """The Arrow type of every column of a month's training CSV, as the feature service declares
    them (on-demand features included)."""
    service = store.get_feature_service(FEATURE_SERVICE)
    columns = {"user_id": pa.string(), ENTITY_TIMESTAMP: pa.timestamp("us", tz="UTC")}
    for projection in service.feature_view_projections:
        columns |= {f.name: _ARROW_TYPES[f.dtype] for f in projection.features}
    return columns | {LABEL: pa.bool_()}


def read_training_chunks(path: Path, columns: dict[str, pa.DataType]) -> Iterator[pd.DataFrame]:
    """A training CSV `CSV_CHUNK_ROWS` rows at a time, parsed by Arrow with the types `columns`
    gives (`training_columns`), every boolean column as 1.0 / 0.0 / NaN and the event timestamp
    as written. Declared types, not each chunk's guess: Arrow writes a float 12.0 as "12", so a
    block could look like integers. A column `columns` does not name (a feature an older month
    had and the service no longer declares) is left out. Twice as fast as pandas' parser here
    (1M users: 1.3 s against 2.5-3.1 s)."""
    types = columns | {ENTITY_TIMESTAMP: pa.string()}  # carried along, never read as a time
    with path.open(newline="") as file:
        header = next(csv.reader(file), [])
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in _batches_of(path, header, types):
        pending.append(batch)
        rows += batch.num_rows
        while rows >= CSV_CHUNK_ROWS:
            table = pa.Table.from_batches(pending)
            yield _as_frame(table.slice(0, CSV_CHUNK_ROWS))
            rest = table.slice(CSV_CHUNK_ROWS)
            pending, rows = rest.to_batches(), rest.num_rows
    if rows:
        yield _as_frame(pa.Table.from_batches(pending))


def _batches_of(
    path: Path, header: list[str], types: dict[str, pa.DataType]
) -> Iterator[pa.RecordBatch]:
    """The CSV's batches, `types`' columns only; a value that does not parse as its column's
    type is an error naming the file (Arrow's own names the column by number only)."""
    try:
        yield from pa_csv.open_csv(
            path,
            read_options=pa_csv.ReadOptions(block_size=CSV_READ_BYTES),
            convert_options=pa_csv.ConvertOptions(
                column_types=types,
                include_columns=[name for name in header if name in types],
                strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise ValueError(
            f"{path}: a value does not parse as the feature service declares its column "
            f"(columns: {', '.join(f'#{i} {name}' for i, name in enumerate(header))}): {exc}"
        ) from exc


def _as_frame(table: pa.Table) -> pd.DataFrame:
    """A chunk for pandas, boolean columns as 1.0 / 0.0 / NaN (not objects, which would look
    like categories)."""
    for i, field in enumerate(table.schema):
        if pa.types.is_boolean(field.type):
            table = table.set_column(i, field.name, pc.cast(table.column(i), pa.float64()))
    return table.to_pandas()


def read_training_sample(
    paths: Sequence[Path], columns: dict[str, pa.DataType], rows: int, seed: int
) -> pd.DataFrame:
    """A seeded uniform sample of at most `rows` rows of these training CSVs taken together (all
    their rows when they hold no more), in file order. Read a chunk at a time: memory holds the
    sample and a chunk or two, however large and many the files (a month of 10M users is over a
    gigabyte of CSV). Each row draws a random key; the `rows` smallest keys are the sample."""
    rng = np.random.default_rng(seed)
    kept: list[pd.DataFrame] = []
    kept_keys: list[np.ndarray] = []
    candidates = 0
    threshold = np.inf  # a row with a key at or above it can no longer be in the sample

    def compact() -> None:
        nonlocal candidates, threshold
        frame = pd.concat(kept, ignore_index=True)
        keys = np.concatenate(kept_keys)
        if len(frame) > rows:
            smallest = np.sort(np.argpartition(keys, rows - 1)[:rows])  # file order kept
            frame, keys = frame.iloc[smallest].reset_index(drop=True), keys[smallest]
            threshold = keys.max()
        kept[:], kept_keys[:] = [frame], [keys]
        candidates = len(frame)

    for path in paths:
        for chunk in read_training_chunks(path, columns):
            keys = rng.random(len(chunk))
            entering = keys < threshold
            if entering.any():
                kept.append(chunk[entering])
                kept_keys.append(keys[entering])
                candidates += int(entering.sum())
            if candidates > 2 * rows:
                compact()
    if not kept:
        raise ValueError(f"no training CSV to read: {', '.join(map(str, paths)) or 'none given'}")
    compact()
    return kept[0]


# ---- the month's training set and its checks ----------------------------------------------


def build_training_csv(
    engine: Engine, store: FeatureStore, output_dir: Path, partition: str
) -> StepResult:
    """Build the month's training set, check it, and write it only when every check passes.
    Built, checked and written a block at a time: memory holds a block and the month's drift
    sample, not the month."""
    started = time.perf_counter()
    previous = previous_month(partition)
    if training_path(output_dir, previous).exists():
        import_ahead()  # the drift test will compare with it: Evidently loads while this builds
    expected = snapshot_users(engine, partition)
    figures = _Figures(nullable_features(store, store.get_feature_service(FEATURE_SERVICE)))
    sampled = sample_rows(expected, partition)
    kept: list[pa.Table] = []
    path = training_path(output_dir, partition)
    try:
        with atomic_write(path) as tmp, contextlib.ExitStack() as stack:
            writer = writes = None
            for block in training_blocks(engine, store, partition):
                if writer is None:
                    writer = stack.enter_context(pa_csv.CSVWriter(tmp, block.schema))
                    # Arrow formats CSV without holding the GIL: one thread writes a block while
                    # the next is read and transformed (1M users: 2.4 s of writing hidden). Left
                    # (and so waited for) before the writer is closed.
                    writes = stack.enter_context(_Writes(writer))
                writes.add(block)
                kept.append(rows_of(block, sampled, figures.rows))
                figures.add(block)
            if writes is not None:
                writes.wait()
            outcomes = figures.outcomes(partition, expected)
            if any(not o.passed for o in outcomes):
                raise _Refused(outcomes)
    except _Refused as refused:
        return StepResult(
            refused.outcomes,
            refused=StepRefused(
                f"training_dataset {partition} not written: "
                + "; ".join(f"{o.name}: {o.description}" for o in refused.outcomes if not o.passed)
            ),
        )
    built = time.perf_counter() - started
    sample = pa.concat_tables(kept)
    keep_sample(sample, partition, output_dir)
    drift = feature_drift(
        sample,
        previous_features(engine, store, output_dir, previous, sample.schema),
        partition,
        previous,
        output_dir,
    )
    return StepResult(
        [*outcomes, drift],
        {
            "path": path,
            "as_of": str(as_of(partition)),
            "rows": figures.rows,
            "features": len(sample.column_names) - 3,
            "label rate": round(figures.label_rate or 0.0, 4),
            "seconds to build and write": round(built, 2),
            "seconds in all": round(time.perf_counter() - started, 2),
            "preview": markdown_table(sample.column_names, figures.preview),
        },
    )


class _Writes:
    """Blocks written by a CSV writer in a thread, at most `AHEAD` of them queued (memory)."""

    AHEAD = 2

    def __init__(self, writer: pa_csv.CSVWriter):
        self.writer = writer
        self.pending: collections.deque[Future] = collections.deque()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="training-csv")

    def add(self, block: pa.Table) -> None:
        self.pending.append(self.pool.submit(self.writer.write_table, block))
        while len(self.pending) > self.AHEAD:
            self.pending.popleft().result()

    def wait(self) -> None:
        """Wait for every block queued; raise the first write's error."""
        while self.pending:
            self.pending.popleft().result()

    def __enter__(self) -> "_Writes":
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _Refused(Exception):
    def __init__(self, outcomes: list[CheckOutcome]):
        self.outcomes = outcomes


def snapshot_users(engine: Engine, partition: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(f"SELECT count(*) FROM {ident(LABELS.snapshot.name)} WHERE as_of = :a"),
            {"a": as_of(partition)},
        ).scalar_one()


def previous_features(
    engine: Engine, store: FeatureStore, output_dir: Path, partition: str, schema: pa.Schema
) -> pa.Table | None:
    """A month's training set for comparing with: the sample kept with its CSV, or the same rows
    read from the CSV when it has none, otherwise its sample built from the snapshots when the
    month is loaded (months run in any order), otherwise None."""
    path = training_path(output_dir, partition)
    if path.exists():
        kept = kept_sample(output_dir, partition, written_after=path)
        return kept if kept is not None else read_sample(path, schema, partition)
    users = snapshot_users(engine, partition)
    if not users:
        return None
    blocks = training_blocks(engine, store, partition)
    return take_rows(blocks, sample_rows(users, partition), schema)


class _Figures:
    """What the training set's checks need, gathered a block at a time (the rows arrive ordered
    by user_id, so a repeated user is next to itself)."""

    def __init__(self, nullable: set[str]):
        self.nullable = nullable
        self.rows = self.repeats = self.churned = self.empty_labels = 0
        self.last_user: str | None = None
        self.empty: dict[str, int] = {}
        self.empty_users: dict[str, list[str]] = {}
        self.features: list[str] = []
        self.preview: list[list] = []

    def add(self, block: pa.Table) -> None:
        users = block.column("user_id")
        if not self.features:
            self.features = [
                c for c in block.column_names if c not in ("user_id", ENTITY_TIMESTAMP, LABEL)
            ]
        if len(self.preview) < 5:
            rows = block.slice(0, 5 - len(self.preview)).to_pylist()
            self.preview += [list(r.values()) for r in rows]
        if block.num_rows:
            pairs = pc.equal(users.slice(1), users.slice(0, block.num_rows - 1))
            self.repeats += pc.sum(pairs).as_py() or 0
            self.repeats += int(users[0].as_py() == self.last_user)
            self.last_user = users[-1].as_py()
        for name in self.features:
            if name in self.nullable or not (nulls := block.column(name).null_count):
                continue
            self.empty[name] = self.empty.get(name, 0) + nulls
            seen = self.empty_users.setdefault(name, [])
            if len(seen) < 5:
                mask = pc.is_null(block.column(name))
                seen += block.filter(mask).column("user_id").slice(0, 5 - len(seen)).to_pylist()
        labels = block.column(LABEL)
        self.churned += pc.sum(labels.cast(pa.int64())).as_py() or 0
        self.empty_labels += labels.null_count
        self.rows += block.num_rows

    @property
    def label_rate(self) -> float | None:
        labelled = self.rows - self.empty_labels
        return self.churned / labelled if labelled else None

    def outcomes(self, partition: str, expected: int) -> list[CheckOutcome]:
        distinct = self.rows - self.repeats
        unexpected = {
            name: f"{self.empty[name]} empty (e.g. {', '.join(self.empty_users[name])})"
            for name in self.features
            if name in self.empty
        }
        rate = self.label_rate if self.rows else None
        low, high = LABEL_RATE_RANGE
        return [
            ONE_ROW_PER_SNAPSHOT_USER.outcome(
                passed=self.rows == expected == distinct and expected > 0,
                description=f"{self.rows} rows, {distinct} distinct users; labels_snapshots "
                f"{partition} has {expected} users",
                metadata={
                    "rows": self.rows,
                    "distinct users": distinct,
                    "snapshot users": expected,
                },
            ),
            NO_UNEXPECTED_NULL_FEATURE.outcome(
                passed=not unexpected,
                description="; ".join(f"{k}: {v}" for k, v in unexpected.items())
                or f"no empty value in the {len(self.features) - len(self.nullable)} features "
                "that must be set",
                metadata={"empty values": unexpected, "may be empty": sorted(self.nullable)},
            ),
            LABEL_RATE_IN_RANGE.outcome(
                passed=rate is not None and self.empty_labels == 0 and low <= rate <= high,
                description=f"churn rate {rate:.2%}, {self.empty_labels} empty labels"
                if rate is not None
                else "no rows",
                metadata={"label rate": rate, "empty labels": self.empty_labels},
            ),
        ]


def nullable_features(store: FeatureStore, service: FeatureService) -> set[str]:
    names = set()
    for projection in service.feature_view_projections:
        names |= {f.name for f in projection.features if NULLABLE_TAG in f.tags}
    for view in store.list_on_demand_feature_views():
        names |= {n.strip() for n in view.tags.get(NULLABLE_TAG, "").split(",") if n.strip()}
    return names
