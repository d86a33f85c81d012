"""The point-in-time-correct training set of a month (the `training_dataset` asset's work).

Entity rows are the users of labels_snapshots M at M's as_of; features are the `churn_features`
service's, with Feast's point-in-time semantics (per feature view, the newest row at or before
the entity timestamp and within the view's ttl); the label is month M's churn_label.

Feast's `get_historical_features` on PostgreSQL builds one generic query for any entity rows
(1M rows: 51 s with one month of snapshots, 77 s with two, growing with history). Here every
entity row has the same timestamp, so per feature view the answer is one `DISTINCT ON` over the
snapshot partitions inside the ttl, hash-joined to the entity rows, streamed out with COPY; the
on-demand features then go through Feast's own `transform_arrow`, as in Feast's retrieval. The
tests compare the result with `get_historical_features`, value for value.
"""

import time
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlalchemy as sa
from feast import FeatureService, FeatureStore
from feast.types import Bool, Float64, Int64, String
from sqlalchemy.engine import Engine

from streamflow_assets.checks import (
    LABEL_RATE_IN_RANGE,
    NO_UNEXPECTED_NULL_FEATURE,
    ONE_ROW_PER_SNAPSHOT_USER,
)
from streamflow_assets.feature_store.fields import NULLABLE_TAG
from streamflow_assets.feature_store.repo import FEATURE_SERVICE
from streamflow_assets.files import atomic_write
from streamflow_assets.monitoring import feature_drift, keep_sample, kept_sample, read_features
from streamflow_assets.months import as_of, event_timestamp, previous_month
from streamflow_assets.report import StepRefused, StepResult, markdown_table
from streamflow_assets.sql import copy_out, ident, inline, literal
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
    service = store.get_feature_service(FEATURE_SERVICE)
    ts = event_timestamp(partition)
    selects, joins, types = [], [], {}

    def only(column: str, prefix: str = "") -> str:
        """The filter to `users`, applied inside each view's subquery too (a DISTINCT ON does
        not let PostgreSQL push the join's filter down)."""
        if users is None:
            return ""
        return f" AND {prefix}{ident(column)} IN ({', '.join(map(literal, users))})"

    params: dict = {"ts": ts, "as_of": as_of(partition)}
    for i, projection in enumerate(_view_projections(store, service)):
        view = store.get_feature_view(projection.name)
        (join_key,) = view.join_keys
        source_ts = ident(view.batch_source.timestamp_field)
        names = [f.name for f in projection.features]
        alias = f"fv{i}"
        params[f"{alias}_from"] = ts - view.ttl if view.ttl else datetime.min
        columns = ", ".join(ident(n) for n in names)
        prune = ""
        if view.batch_source.get_table_query_string() in SNAPSHOT_NAMES:
            # A snapshot's event_timestamp is its as_of at 00:00 UTC: the same rows, but now
            # PostgreSQL skips the months outside the window (snapshots are partitioned by as_of),
            # so the query does not grow with history.
            params[f"{alias}_first_day"] = params[f"{alias}_from"].date() if view.ttl else date.min
            prune = f" AND as_of >= :{alias}_first_day AND as_of <= :as_of"
        joins.append(
            f"LEFT JOIN (SELECT DISTINCT ON ({ident(join_key)}) {ident(join_key)} AS k, "
            f"{columns} FROM {view.batch_source.get_table_query_string()} "
            f"WHERE {source_ts} <= :ts AND {source_ts} >= :{alias}_from{prune}{only(join_key)} "
            f"ORDER BY {ident(join_key)}, {source_ts} DESC) {alias} ON {alias}.k = e.user_id"
        )
        selects += [f"{alias}.{ident(n)}" for n in names]
        types |= {f.name: _ARROW_TYPES[f.dtype] for f in projection.features}
    labels = ident(LABELS.snapshot.name)
    query = (
        f"SELECT e.user_id, {', '.join(selects)}, e.{ident(LABEL)} "
        f"FROM {labels} e {' '.join(joins)} WHERE e.as_of = :as_of"
        + only("user_id", "e.")
        + " ORDER BY e.user_id"
    )
    table = _copy_out(engine, query, params, {"user_id": pa.string(), **types, LABEL: pa.bool_()})
    table = table.add_column(
        1, ENTITY_TIMESTAMP, pa.array([ts] * table.num_rows, pa.timestamp("us", tz="UTC"))
    )
    return _with_on_demand_features(store, service, table)


def _view_projections(store: FeatureStore, service: FeatureService):
    on_demand = {v.name for v in store.list_on_demand_feature_views()}
    return [p for p in service.feature_view_projections if p.name not in on_demand]


def _with_on_demand_features(
    store: FeatureStore, service: FeatureService, table: pa.Table
) -> pa.Table:
    label = table.column(LABEL)
    table = table.drop_columns([LABEL])
    on_demand = {v.name: v for v in store.list_on_demand_feature_views()}
    for projection in service.feature_view_projections:
        if projection.name not in on_demand:
            continue
        view = on_demand[projection.name]
        inputs = [f.name for p in view.source_feature_view_projections.values() for f in p.features]
        transformed = view.transform_arrow(table.select(inputs), False)
        for field in projection.features:
            table = table.append_column(field.name, transformed[field.name])
    return table.append_column(LABEL, label)


def _copy_out(engine: Engine, query: str, params: dict, types: dict[str, pa.DataType]) -> pa.Table:
    """Run a query with COPY ... TO STDOUT and parse the CSV with Arrow."""
    with engine.connect() as conn:
        conn.execute(sa.text("SET work_mem = '256MB'"))
        conn.execute(sa.text("SET TIME ZONE 'UTC'"))
        buffer = copy_out(conn, inline(conn, query, params))
        conn.rollback()
    return pa_csv.read_csv(
        buffer,
        convert_options=pa_csv.ConvertOptions(
            column_types=types,
            true_values=["t"],
            false_values=["f"],
            strings_can_be_null=True,
        ),
    )


def read_training_csv(path: Path) -> pd.DataFrame:
    """A training CSV as pandas reads it, booleans with empty values made 1.0 / 0.0 / NaN (pandas
    leaves them as objects, which would look like categories)."""
    frame = pd.read_csv(path, dtype={"user_id": str})
    for column in frame.columns:
        values = frame[column].dropna()
        if frame[column].dtype == object and len(values) and values.map(type).eq(bool).all():
            frame[column] = frame[column].map({True: 1.0, False: 0.0})
    return frame


CSV_CHUNK_ROWS = 200_000


def read_training_chunks(path: Path) -> Iterator[pd.DataFrame]:
    """A training CSV `CSV_CHUNK_ROWS` rows at a time, every boolean column as 1.0 / 0.0 / NaN
    (in every chunk alike, whether or not that chunk has an empty value)."""
    with pd.read_csv(path, dtype={"user_id": str}, chunksize=CSV_CHUNK_ROWS) as reader:
        for chunk in reader:
            for column in chunk.columns:
                values = chunk[column].dropna()
                if chunk[column].dtype == bool or (
                    chunk[column].dtype == object
                    and len(values)
                    and values.map(type).eq(bool).all()
                ):
                    chunk[column] = chunk[column].map({True: 1.0, False: 0.0}).astype("float64")
            yield chunk


def read_training_sample(paths: Sequence[Path], rows: int, seed: int) -> pd.DataFrame:
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
        for chunk in read_training_chunks(path):
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


def write_csv_atomically(table: pa.Table, path: Path) -> None:
    with atomic_write(path) as tmp:
        pa_csv.write_csv(table, tmp)


# ---- the month's training set and its checks ----------------------------------------------


def build_training_csv(
    engine: Engine, store: FeatureStore, output_dir: Path, partition: str
) -> StepResult:
    """Build the month's training set, check it, and write it only when every check passes."""
    started = time.perf_counter()
    table = training_table(engine, store, partition)
    built = time.perf_counter() - started
    outcomes = list(_check(engine, store, table, partition))
    failed = [o for o in outcomes if not o.passed]
    if failed:
        return StepResult(
            outcomes,
            refused=StepRefused(
                f"training_dataset {partition} not written: "
                + "; ".join(f"{o.name}: {o.description}" for o in failed)
            ),
        )
    path = training_path(output_dir, partition)
    write_csv_atomically(table, path)
    keep_sample(table, partition, output_dir)
    labels = table.column(LABEL)
    previous = previous_month(partition)
    drift = feature_drift(
        table,
        previous_features(engine, store, output_dir, previous, table.schema),
        partition,
        previous,
        output_dir,
    )
    return StepResult(
        [*outcomes, drift],
        {
            "path": path,
            "as_of": str(as_of(partition)),
            "rows": table.num_rows,
            "features": len(table.column_names) - 3,
            "label rate": round(pc.mean(labels.cast(pa.float64())).as_py() or 0.0, 4),
            "seconds to build": round(built, 2),
            "seconds in all": round(time.perf_counter() - started, 2),
            "preview": markdown_table(
                table.column_names, [r.values() for r in table.slice(0, 5).to_pylist()]
            ),
        },
    )


def previous_features(
    engine: Engine, store: FeatureStore, output_dir: Path, partition: str, schema: pa.Schema
) -> pa.Table | None:
    """A month's training set for comparing with: the sample kept with its CSV, or the CSV when
    it has none, otherwise built from the snapshots when the month is loaded (months run in any
    order), otherwise None."""
    path = training_path(output_dir, partition)
    if path.exists():
        kept = kept_sample(output_dir, partition, written_after=path)
        return kept if kept is not None else read_features(path, schema)
    with engine.connect() as conn:
        loaded = conn.execute(
            sa.text(
                f"SELECT EXISTS (SELECT 1 FROM {ident(LABELS.snapshot.name)} WHERE as_of = :a)"
            ),
            {"a": as_of(partition)},
        ).scalar_one()
    return training_table(engine, store, partition) if loaded else None


def _check(engine: Engine, store: FeatureStore, table: pa.Table, partition: str):
    with engine.connect() as conn:
        expected = conn.execute(
            sa.text(f"SELECT count(*) FROM {ident(LABELS.snapshot.name)} WHERE as_of = :a"),
            {"a": as_of(partition)},
        ).scalar()
    users = table.column("user_id")
    distinct = pc.count_distinct(users).as_py()
    yield ONE_ROW_PER_SNAPSHOT_USER.outcome(
        passed=table.num_rows == expected == distinct and expected > 0,
        description=f"{table.num_rows} rows, {distinct} distinct users; labels_snapshots "
        f"{partition} has {expected} users",
        metadata={"rows": table.num_rows, "distinct users": distinct, "snapshot users": expected},
    )

    service = store.get_feature_service(FEATURE_SERVICE)
    nullable = nullable_features(store, service)
    features = [c for c in table.column_names if c not in ("user_id", ENTITY_TIMESTAMP, LABEL)]
    unexpected = {}
    for name in features:
        if name in nullable:
            continue
        nulls = table.column(name).null_count
        if nulls:
            mask = pc.is_null(table.column(name))
            sample = table.filter(mask).column("user_id").slice(0, 5).to_pylist()
            unexpected[name] = f"{nulls} empty (e.g. {', '.join(sample)})"
    yield NO_UNEXPECTED_NULL_FEATURE.outcome(
        passed=not unexpected,
        description="; ".join(f"{k}: {v}" for k, v in unexpected.items())
        or f"no empty value in the {len(features) - len(nullable)} features that must be set",
        metadata={
            "empty values": unexpected,
            "may be empty": sorted(nullable),
        },
    )

    labels = table.column(LABEL)
    rate = pc.mean(labels.cast(pa.float64())).as_py() if table.num_rows else None
    low, high = LABEL_RATE_RANGE
    yield LABEL_RATE_IN_RANGE.outcome(
        passed=rate is not None and labels.null_count == 0 and low <= rate <= high,
        description=f"churn rate {rate:.2%}, {labels.null_count} empty labels"
        if rate is not None
        else "no rows",
        metadata={"label rate": rate, "empty labels": labels.null_count},
    )


def nullable_features(store: FeatureStore, service: FeatureService) -> set[str]:
    names = set()
    for projection in service.feature_view_projections:
        names |= {f.name for f in projection.features if NULLABLE_TAG in f.tags}
    for view in store.list_on_demand_feature_views():
        names |= {n.strip() for n in view.tags.get(NULLABLE_TAG, "").split(",") if n.strip()}
    return names
