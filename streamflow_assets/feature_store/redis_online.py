"""Materialize a month into Feast's Redis online store (STREAMFLOW_ONLINE_STORE=redis or
redis_cluster), in Feast's own Redis format, from rows PostgreSQL encodes.

Feast keeps an entity in one hash: the key is the serialized entity key followed by the project,
each feature a field named by a murmur3 hash of `view:feature` holding the serialized
`feast.types.Value`, and each view's event time a field `_ts:view` holding a serialized
`google.protobuf.Timestamp`. Here PostgreSQL serializes keys, values and times with the same
encoders as the PostgreSQL writer (`online.py`; checked byte for byte against Feast's
serializers in the tests), one row per user with every view of the month, and Python sends each
user as one HSET, pipelined. One HSET is atomic in Redis (and in a cluster: a user's hash lives
in one slot), so a reader sees every view of a user from one month, never a half-written user.

Per user the newest month wins: when a newer month is already published, each user's stored
event times are read first and the views holding newer values are left out of that user's HSET.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import sqlalchemy as sa
from feast import FeatureStore, FeatureView
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.engine import Engine

from streamflow_assets.adapters.feast import redis_client, redis_fields, redis_key_suffix
from streamflow_assets.failpoints import failpoint
from streamflow_assets.feature_store.online import (
    entity_key_sql,
    published_months,
    record_published,
    value_sql,
    varint_sql,
)
from streamflow_assets.sql import background_session, ident

BATCH_USERS = 5_000
"""Users per pipeline: one round trip each, a few MB of commands."""
WRITE_PARTS = 2
"""Sessions writing side by side, each a share of the users (by a hash of the id): PostgreSQL
encodes one share while Python sends the other's."""


def timestamp_sql(column: str) -> str:
    """The serialized `google.protobuf.Timestamp` of a timestamptz column, as Feast's Redis store
    writes a view's event time (`Timestamp.FromDatetime`): seconds, then nanoseconds, each
    left out when zero."""
    seconds = f"floor(extract(epoch FROM {column}))::bigint"
    nanos = f"(extract(microseconds FROM {column})::bigint % 1000000) * 1000"
    return (
        f"(CASE WHEN {seconds} = 0 THEN '\\x'::bytea ELSE '\\x08'::bytea || "
        f"{varint_sql(seconds)} END || CASE WHEN {nanos} = 0 THEN '\\x'::bytea "
        f"ELSE '\\x10'::bytea || {varint_sql(nanos)} END)"
    )


def _month_users(views: list[FeatureView], values: bool) -> tuple[str, str]:
    """(the views' one join key, `WITH ... FROM ...`: one row per user of the window [:start,
    :end) in any view, with `k` the user and, per view i, `t{i}` its event time (NULL when the
    user is not in that view) and, with `values`, its features `v{i}_{j}`)."""
    join_keys = {k for v in views for k in v.join_keys}
    if len(join_keys) != 1:
        raise NotImplementedError(f"views keyed by {sorted(join_keys)}: one key is supported")
    (join_key,) = join_keys
    ctes = []
    for i, view in enumerate(views):
        source = view.batch_source
        ts = ident(source.timestamp_field)
        features = "".join(
            f", s.{ident(f.name)} AS v{i}_{j}" for j, f in enumerate(view.features) if values
        )
        ctes.append(
            f"m{i} AS (SELECT s.{ident(join_key)} AS k, s.{ts} AS t{i}{features} "
            f"FROM {source.get_table_query_string()} s WHERE s.{ts} >= :start AND s.{ts} < :end "
            f"AND abs(hashtext(s.{ident(join_key)}) % :parts) = :part)"
        )
    joined = " FULL JOIN ".join(f"m{i}" if i == 0 else f"m{i} USING (k)" for i in range(len(views)))
    return join_key, f"WITH {', '.join(ctes)} SELECT {{}} FROM {joined}"


def _key_sql(store: FeatureStore, join_key: str) -> tuple[str, dict[str, object]]:
    ek, params = entity_key_sql(join_key, "k")
    return f"{ek} || :key_suffix", {**params, "key_suffix": redis_key_suffix(store.config)}


def month_rows_sql(store: FeatureStore, views: list[FeatureView]) -> tuple[str, dict[str, object]]:
    """One row per user of the window: the Redis key, then per view its serialized event time
    (NULL when the user is not in that view) and values."""
    join_key, query = _month_users(views, values=True)
    key, params = _key_sql(store, join_key)
    columns = [key]
    for i, view in enumerate(views):
        columns.append(f"CASE WHEN t{i} IS NOT NULL THEN {timestamp_sql(f't{i}')} END")
        columns.extend(
            value_sql(f.dtype.to_value_type(), f"v{i}_{j}")[0] for j, f in enumerate(view.features)
        )
    return query.format(", ".join(columns)), params


def month_keys_sql(store: FeatureStore, views: list[FeatureView]) -> tuple[str, dict[str, object]]:
    """One row per user of the window: the Redis key, the user, then per view whether the user
    is in it."""
    join_key, query = _month_users(views, values=False)
    key, params = _key_sql(store, join_key)
    present = [f"t{i} IS NOT NULL" for i in range(len(views))]
    return query.format(", ".join([key, "k", *present])), params


def stream_rows(engine: Engine, query: str, params: dict) -> Iterator[list[tuple]]:
    """The query's rows in batches of BATCH_USERS, streamed from a server-side cursor."""
    with background_session(engine) as conn:
        # The encoders are long expressions: compiling them (JIT) costs more than running them.
        conn.execute(sa.text("SET LOCAL jit = off"))
        result = conn.execution_options(stream_results=True, max_row_buffer=BATCH_USERS).execute(
            sa.text(query), params
        )
        for batch in result.partitions(BATCH_USERS):
            yield [tuple(row) for row in batch]


def _newer_views(
    client, keys: list[bytes], ts_fields: list[bytes], end: datetime
) -> list[list[bool]]:
    """Per key, per view: whether Redis already holds that view's values from `end` or later."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hmget(key, ts_fields)
    end_seconds = end.timestamp()
    return [
        [bool(stored) and Timestamp.FromString(stored).seconds >= end_seconds for stored in row]
        for row in pipe.execute()
    ]


def write_month(
    engine: Engine,
    store: FeatureStore,
    views: list[FeatureView],
    start: datetime,
    end: datetime,
    month: str,
) -> dict[str, object]:
    """Write the window's rows of every view into Redis (per user the newest month wins) and
    record the month as published; the metadata of the write. The users are split over
    WRITE_PARTS sessions written side by side. The caller holds ONLINE_LOCK."""
    started = time.perf_counter()
    redis_client(store)  # a Redis that does not answer is named before anything is read
    with engine.connect() as conn:
        newer_published = [m for m in published_months(conn) if m > month]
    query, params = month_rows_sql(store, views)
    window = {**params, "start": start, "end": end, "parts": WRITE_PARTS}

    def write_part(part: int) -> tuple[int, int]:
        return _write_users(
            store, views, stream_rows(engine, query, {**window, "part": part}), end,
            check_newer=bool(newer_published),
        )  # fmt: skip

    with ThreadPoolExecutor(WRITE_PARTS) as pool:
        written = list(pool.map(write_part, range(WRITE_PARTS)))
    failpoint("online.staged")
    with engine.begin() as conn:
        record_published(conn, month)
    return {
        "online store": f"Redis ({store.config.online_store.redis_type.value})",
        "users written": sum(users for users, _ in written),
        "views left with newer values": sum(kept for _, kept in written),
        "newer months online": ", ".join(newer_published) or "none",
        "seconds": round(time.perf_counter() - started, 2),
    }


def _write_users(
    store: FeatureStore,
    views: list[FeatureView],
    batches: Iterator[list[tuple]],
    end: datetime,
    check_newer: bool,
) -> tuple[int, int]:
    """Send each user of `batches` (rows of `month_rows_sql`) as one HSET, a pipeline per batch;
    with `check_newer`, leave out the views Redis holds from `end` or later. (users, views
    left)."""
    config = store.config
    client = redis_client(store)
    fields = [redis_fields(config, v) for v in views]
    ts_fields = [ts for ts, _ in fields]
    ttl = config.online_store.key_ttl_seconds
    users = skipped = 0
    for n, rows in enumerate(batches):
        newer = (
            _newer_views(client, [row[0] for row in rows], ts_fields, end)
            if check_newer
            else [[False] * len(views)] * len(rows)
        )
        pipe = client.pipeline(transaction=False)
        for row, keep in zip(rows, newer, strict=True):
            args: list[bytes] = []
            at = 1
            for (ts_field, value_fields), kept in zip(fields, keep, strict=True):
                stamp = row[at]
                if stamp is not None and not kept:
                    args.append(ts_field)
                    args.append(stamp)
                    values = row[at + 1 : at + 1 + len(value_fields)]
                    for field, value in zip(value_fields, values, strict=True):
                        args.append(field)
                        args.append(value)
                elif stamp is not None:
                    skipped += 1
                at += 1 + len(value_fields)
            if args:
                pipe.execute_command("HSET", row[0], *args)
                if ttl:
                    pipe.expire(row[0], ttl)
        pipe.execute()
        users += len(rows)
        if n == 0:
            failpoint("online.swapping")
    return users, skipped
