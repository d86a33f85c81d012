"""`training_dataset`: the point-in-time-correct training CSV of a month.

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

import io
import os
import tempfile
import time
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlalchemy as sa
from feast import FeatureService, FeatureStore
from feast.types import Bool, Float64, Int64, String
from sqlalchemy.engine import Engine

from streamflow_assets.feature_store.assets import feast_registry
from streamflow_assets.feature_store.fields import NULLABLE_TAG
from streamflow_assets.feature_store.repo import FEATURE_SERVICE, feature_store
from streamflow_assets.partitions import as_of, monthly_partitions
from streamflow_assets.resources import StreamflowDatabase
from streamflow_assets.snapshots import event_timestamp
from streamflow_assets.table_specs import LABELS, SNAPSHOT_TABLES
from streamflow_assets.warehouse import ident, markdown_table

SNAPSHOT_NAMES = {spec.snapshot.name for spec in SNAPSHOT_TABLES}
LABEL = "churn_label"
LABEL_RATE_RANGE = (0.01, 0.99)
ENTITY_TIMESTAMP = "event_timestamp"

_ARROW_TYPES = {Int64: pa.int64(), Float64: pa.float64(), Bool: pa.bool_(), String: pa.string()}


def training_path(output_dir: Path, partition: str) -> Path:
    return output_dir / f"training_df_{as_of(partition).isoformat()}.csv"


def training_table(engine: Engine, store: FeatureStore, partition: str) -> pa.Table:
    """The training rows of a month: user_id, event_timestamp, every feature of the service
    (on-demand ones included), churn_label; ordered by user_id."""
    service = store.get_feature_service(FEATURE_SERVICE)
    ts = event_timestamp(partition)
    selects, joins, types = [], [], {}
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
            f"WHERE {source_ts} <= :ts AND {source_ts} >= :{alias}_from{prune} "
            f"ORDER BY {ident(join_key)}, {source_ts} DESC) {alias} ON {alias}.k = e.user_id"
        )
        selects += [f"{alias}.{ident(n)}" for n in names]
        types |= {f.name: _ARROW_TYPES[f.dtype] for f in projection.features}
    labels = ident(LABELS.snapshot.name)
    query = (
        f"SELECT e.user_id, {', '.join(selects)}, e.{ident(LABEL)} "
        f"FROM {labels} e {' '.join(joins)} WHERE e.as_of = :as_of ORDER BY e.user_id"
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
    buffer = io.BytesIO()
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur:
            cur.execute("SET work_mem = '256MB'")
            cur.execute("SET TIME ZONE 'UTC'")
            sql = _inline(engine, query, params)
            with cur.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER)") as copy:
                for chunk in copy:
                    buffer.write(chunk)
        raw.rollback()
    finally:
        raw.close()
    buffer.seek(0)
    return pa_csv.read_csv(
        buffer,
        convert_options=pa_csv.ConvertOptions(
            column_types=types,
            true_values=["t"],
            false_values=["f"],
            strings_can_be_null=True,
        ),
    )


def _inline(engine: Engine, query: str, params: dict) -> str:
    """COPY takes no bind parameters: render them as literals through SQLAlchemy."""
    statement = sa.text(query).bindparams(**params)
    return str(statement.compile(engine, compile_kwargs={"literal_binds": True}))


def read_training_csv(path: Path) -> pd.DataFrame:
    """A training CSV as pandas reads it, booleans with empty values made 1.0 / 0.0 / NaN (pandas
    leaves them as objects, which would look like categories)."""
    frame = pd.read_csv(path, dtype={"user_id": str})
    for column in frame.columns:
        values = frame[column].dropna()
        if frame[column].dtype == object and len(values) and values.map(type).eq(bool).all():
            frame[column] = frame[column].map({True: 1.0, False: 0.0})
    return frame


def write_csv_atomically(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pa_csv.write_csv(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---- the asset and its checks -----------------------------------------------------------------

CHECKS = {
    "one_row_per_snapshot_user": "Exactly one row per user of labels_snapshots for the month.",
    "no_unexpected_null_feature": "No empty feature value, except where the feature's "
    "definition says it may be empty (tag `nullable`).",
    "label_rate_in_range": "The share of churned users lies between 1% and 99%.",
}


@dg.asset(
    group_name="training",
    partitions_def=monthly_partitions,
    deps=[feast_registry, LABELS.snapshot.name],
    kinds={"feast", "csv"},
    check_specs=[
        dg.AssetCheckSpec(
            name, asset="training_dataset", description=text, partitions_def=monthly_partitions
        )
        for name, text in CHECKS.items()
    ],
)
def training_dataset(context: dg.AssetExecutionContext, database: StreamflowDatabase):
    """The month's training CSV, `STREAMFLOW_OUTPUT_DIR/training_df_<as_of>.csv`: one row per
    user of the month's labels snapshot, every `churn_features` feature as of the month's end
    (never a later value), and the month's churn_label.

    Written only when its checks pass, and atomically (a reader never sees half a file)."""
    partition = context.partition_key
    engine = database.engine()
    settings = database.settings()
    started = time.perf_counter()
    store = feature_store()
    table = training_table(engine, store, partition)
    built = time.perf_counter() - started

    results = list(_check(engine, store, table, partition))
    yield from results
    failed = [r for r in results if not r.passed]
    if failed:
        raise dg.Failure(
            f"training_dataset {partition} not written: "
            + "; ".join(f"{r.check_name}: {r.description}" for r in failed)
        )
    path = training_path(settings.output_dir, partition)
    write_csv_atomically(table, path)
    labels = table.column(LABEL)
    yield dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "as_of": str(as_of(partition)),
            "rows": table.num_rows,
            "features": len(table.column_names) - 3,
            "label rate": round(pc.mean(labels.cast(pa.float64())).as_py() or 0.0, 4),
            "seconds to build": round(built, 2),
            "seconds in all": round(time.perf_counter() - started, 2),
            "preview": dg.MetadataValue.md(
                markdown_table(
                    table.column_names, [r.values() for r in table.slice(0, 5).to_pylist()]
                )
            ),
        }
    )


def _check(engine: Engine, store: FeatureStore, table: pa.Table, partition: str):
    with engine.connect() as conn:
        expected = conn.execute(
            sa.text(f"SELECT count(*) FROM {ident(LABELS.snapshot.name)} WHERE as_of = :a"),
            {"a": as_of(partition)},
        ).scalar()
    users = table.column("user_id")
    distinct = pc.count_distinct(users).as_py()
    yield dg.AssetCheckResult(
        check_name="one_row_per_snapshot_user",
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
    yield dg.AssetCheckResult(
        check_name="no_unexpected_null_feature",
        passed=not unexpected,
        description="; ".join(f"{k}: {v}" for k, v in unexpected.items())
        or f"no empty value in the {len(features) - len(nullable)} features that must be set",
        metadata={
            "empty values": dg.MetadataValue.json(unexpected),
            "may be empty": sorted(nullable),
        },
    )

    labels = table.column(LABEL)
    rate = pc.mean(labels.cast(pa.float64())).as_py() if table.num_rows else None
    low, high = LABEL_RATE_RANGE
    yield dg.AssetCheckResult(
        check_name="label_rate_in_range",
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
