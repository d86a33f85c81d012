"""The checks of a month's materialization: everyone is online, and online equals offline.

`every_user_online` is set-based SQL over the online tables (each user's id read back out of
Feast's serialized entity key); `online_matches_offline` reads a seeded sample of users through
Feast's own `get_online_features` with the `churn_features` service — on-demand features
included — and compares them with the training path's values for the same users: the
training/serving skew test, on every materialization.
"""

from __future__ import annotations

import math
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import sqlalchemy as sa
from feast import FeatureStore, FeatureView
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.engine import Engine

from streamflow_assets.adapters.feast import (
    entity_key_prefix,
    redis_client,
    redis_fields,
    redis_key_suffix,
    type_checks_off,
)
from streamflow_assets.checks import EVERY_USER_ONLINE, ONLINE_MATCHES_OFFLINE
from streamflow_assets.feature_store.connection import uses_redis
from streamflow_assets.feature_store.online import online_table, published_months
from streamflow_assets.feature_store.redis_online import month_keys_sql, stream_rows
from streamflow_assets.feature_store.repo import FEATURE_SERVICE
from streamflow_assets.feature_store.training import training_table
from streamflow_assets.months import as_of, partition_key, time_window
from streamflow_assets.report import CheckOutcome, markdown_table
from streamflow_assets.sql import background_session, hash_sum, ident
from streamflow_assets.table_specs import LABELS, SNAPSHOT_TABLES

SAMPLE_SIZE = 300
EXAMPLES = 5


def every_user_online(engine: Engine, store: FeatureStore, partition: str) -> CheckOutcome:
    start, end = time_window(partition)
    views = store.registry.list_feature_views(store.project, allow_cache=False)
    if uses_redis(store.config):
        rows = _redis_coverage(engine, store, views, start, end)
    else:
        with ThreadPoolExecutor(2) as pool:
            rows = list(pool.map(lambda v: _view_coverage(engine, store, v, start, end), views))
    with engine.connect() as conn:
        published = partition in published_months(conn)
    unrecorded = sorted(v.name for v in views if (start, end) not in v.materialization_intervals)
    problems = [
        f"{r['feature view']}: {r[k]} {what}"
        for r in rows
        for k, what in (
            ("missing", "users of the month not online"),
            ("older", "users online with values older than the month"),
            ("unknown", "online users no month ever had"),
        )
        if r[k]
    ]
    if not published:
        problems.append(f"{partition} is not recorded as published online")
    if unrecorded:
        problems.append(f"the registry has no interval for {partition} on {', '.join(unrecorded)}")
    return EVERY_USER_ONLINE.outcome(
        passed=not problems and all(r["month users"] for r in rows) and bool(rows),
        description="; ".join(problems)
        or (
            f"all {rows[0]['month users'] if rows else 0} users of {partition} online in "
            f"{len(rows)} feature views"
            if rows and all(r["month users"] for r in rows)
            else f"no user of {partition} in some feature view's source"
        ),
        metadata={
            "by feature view": markdown_table(list(rows[0]), [list(r.values()) for r in rows])
            if rows
            else "no feature view",
            "published": published,
            "views without the month's interval": unrecorded or "none",
        },
    )


def _view_coverage(
    engine: Engine, store: FeatureStore, view: FeatureView, start: datetime, end: datetime
) -> dict:
    """How the view's online table covers the month's users. First by set digests (a count and
    a sum of 64-bit hashes of user ids, additive over disjoint sets), three scans and no join:
    the users online with the month's event time must be the month's users, none newer, and the
    ones online with an older time exactly the live table's users outside the month. That is
    the steady state (months in order, every one materialized), and it proves missing, older and
    unknown all zero. Anything else (an old month re-run under newer values, a month never
    materialized, a broken table) is counted exactly by joining the month's users with the
    online ones."""
    schema, table = online_table(store.config, view)
    (join_key,) = view.join_keys
    source = view.batch_source
    ts = ident(source.timestamp_field)
    # Feast's entity key is a fixed prefix, the id's 4-byte length, then the id in UTF-8.
    skip = len(entity_key_prefix(join_key)) + 5
    online = (
        f"SELECT convert_from(substr(entity_key, {skip}), 'UTF8') AS k, event_ts "
        f"FROM {ident(schema, table)} WHERE feature_name = :feature"
    )
    source_table = source.get_table_query_string()
    live = _live_table(source_table)
    # A snapshot's month is its own partition: the scan does not grow with history.
    prune = " AND as_of >= :first AND as_of < :after" if live != source_table else ""
    month = (
        f"SELECT {ident(join_key)} AS k FROM {source_table} "
        f"WHERE {ts} >= :start AND {ts} < :end{prune}"
    )
    params = {
        "feature": view.features[0].name,
        "start": start,
        "end": end,
        "first": start.date(),
        "after": end.date(),
    }
    row = {"feature view": view.name, "online table": f"{schema}.{table}"}
    with background_session(engine) as conn:  # bulk work: the API's reads come first
        conn.execute(sa.text("SET LOCAL work_mem = '256MB'"))
        window = "event_ts >= :start AND event_ts < :end"
        digests = conn.execute(
            sa.text(
                f"SELECT m.n, m.d, l.n - m.n, l.d - m.d, o.* "
                f"FROM ({_DIGEST.format(month)}) m, "
                f"({_DIGEST.format(f'SELECT {ident(join_key)} AS k FROM {ident(live)}')}) l, "
                f"(SELECT {_digest_of(window)}, {_digest_of('event_ts < :start')}, "
                f"count(*) FILTER (WHERE event_ts >= :end) FROM ({online}) x) o"
            ),
            params,
        ).one()
        month_n, month_d, rest_n, rest_d, online_n, online_d, older_n, older_d, newer = digests
        month_online = (month_n, month_d) == (online_n, online_d)
        rest_older = (rest_n, rest_d) == (older_n, older_d)
        if month_online and rest_older and not newer:
            return row | {
                "month users": month_n,
                "missing": 0,
                "older": 0,
                "unknown": 0,
                "missing e.g.": "-",
                "compared by": "set digests",
            }
        # One pass: the month's users against the online ones. Online users outside the month
        # must be in the live table, which holds every user any month had (one row each).
        counts = conn.execute(
            sa.text(
                "SELECT count(m.k), count(m.k) FILTER (WHERE o.k IS NULL), "
                "count(m.k) FILTER (WHERE o.event_ts < :start), "
                "(array_agg(m.k ORDER BY m.k) FILTER (WHERE o.k IS NULL))[1:5], "
                "count(o.k) FILTER (WHERE m.k IS NULL AND NOT EXISTS (SELECT 1 FROM "
                f"{ident(live)} s WHERE s.{ident(join_key)} = o.k)) "
                f"FROM ({month}) m FULL JOIN ({online}) o ON o.k = m.k"
            ),
            params,
        ).one()
    users, missing, older, examples, unknown = counts
    return row | {
        "month users": users,
        "missing": missing,
        "older": older,
        "unknown": unknown,
        "missing e.g.": ", ".join(examples or []) or "-",
        "compared by": "join",
    }


def _digest_of(where: str) -> str:
    """The digest (`sql.hash_sum`) of the ids `k` of the rows that meet a condition: how many,
    and the sum of their hashes."""
    return f"count(*) FILTER (WHERE {where}), {hash_sum('k', where)}"


_DIGEST = f"SELECT count(*) AS n, {hash_sum('k')} AS d FROM ({{}}) s"
"""The digest of every id a query of `k` returns, as columns n and d."""


def _redis_coverage(
    engine: Engine, store: FeatureStore, views: list[FeatureView], start: datetime, end: datetime
) -> list[dict]:
    """`_view_coverage` of every view in Feast's Redis store: each user of the month's event
    time per view read back (pipelined HMGET), and the store's keys of this project counted
    against the users any month had (a key no month had makes the count exceed it)."""
    config = store.config
    client = redis_client(store)
    ts_fields = [redis_fields(config, v)[0] for v in views]
    query, params = month_keys_sql(store, views)
    counts = [{"month users": 0, "missing": 0, "older": 0, "examples": []} for _ in views]
    start_seconds = start.timestamp()
    window = {**params, "start": start, "end": end, "parts": 1, "part": 0}
    for rows in stream_rows(engine, query, window):
        pipe = client.pipeline(transaction=False)
        for row in rows:
            pipe.hmget(row[0], ts_fields)
        for row, stored in zip(rows, pipe.execute(), strict=True):
            for i, count in enumerate(counts):
                if not row[2 + i]:
                    continue
                count["month users"] += 1
                if stored[i] is None:
                    count["missing"] += 1
                    if len(count["examples"]) < EXAMPLES:
                        count["examples"].append(row[1])
                elif Timestamp.FromString(stored[i]).seconds < start_seconds:
                    count["older"] += 1
    suffix = redis_key_suffix(config)
    online = sum(
        1 for key in client.scan_iter(match=b"*" + suffix, count=10_000) if key.endswith(suffix)
    )
    (join_key,) = views[0].join_keys
    lives = {_live_table(v.batch_source.get_table_query_string()) for v in views}
    users = " UNION ".join(f"SELECT {ident(join_key)} FROM {ident(t)}" for t in sorted(lives))
    with engine.connect() as conn:
        ever = conn.execute(sa.text(f"SELECT count(*) FROM ({users}) u")).scalar_one()
    return [
        {
            "feature view": view.name,
            "online store": "redis",
            "month users": count["month users"],
            "missing": count["missing"],
            "older": count["older"],
            "unknown": max(0, online - ever),
            "missing e.g.": ", ".join(sorted(count["examples"])) or "-",
        }
        for view, count in zip(views, counts, strict=True)
    ]


def _live_table(source: str) -> str:
    """The live table a snapshot table is taken from (any other source is its own)."""
    return next((t.name for t in SNAPSHOT_TABLES if t.snapshot.name == source), source)


def online_matches_offline(
    engine: Engine, store: FeatureStore, partition: str, sample_size: int = SAMPLE_SIZE
) -> CheckOutcome:
    with engine.connect() as conn:
        users = list(
            conn.execute(
                sa.text(
                    f"SELECT user_id FROM {ident(LABELS.snapshot.name)} WHERE as_of = :as_of "
                    "ORDER BY hashtext(user_id || :seed), user_id LIMIT :n"
                ),
                {"as_of": as_of(partition), "seed": partition, "n": sample_size},
            ).scalars()
        )
    service = store.get_feature_service(FEATURE_SERVICE)
    with type_checks_off():
        served = store.get_online_features(
            features=service, entity_rows=[{"user_id": u} for u in users]
        ).to_dict(include_event_timestamps=True)
    names = [f.name for p in service.feature_view_projections for f in p.features]
    stamps = [k for k in served if k.endswith("__ts")]
    # Each user's values come from the month of their newest online row.
    by_month: dict[str, list[int]] = defaultdict(list)
    not_online = []
    for i, user in enumerate(users):
        seconds = [served[k][i] for k in stamps if served[k][i]]
        if not seconds:
            not_online.append(user)
            continue
        by_month[partition_key(datetime.fromtimestamp(max(seconds), UTC).date())].append(i)
    mismatches = []
    for month, rows in by_month.items():
        offline = training_table(engine, store, month, [users[i] for i in rows]).to_pylist()
        expected = {r["user_id"]: r for r in offline}
        for i in rows:
            row = expected.get(users[i])
            if row is None:
                mismatches.append((users[i], "(all)", "online", f"not in the {month} training set"))
                continue
            for name in names:
                if not _same(served[name][i], row[name]):
                    mismatches.append((users[i], name, served[name][i], row[name]))
    compared = len(users) - len(not_online)
    problems = []
    if not users:
        problems.append(f"{partition} has no users to sample")
    if not_online:
        problems.append(f"{len(not_online)} sampled users not online")
    if mismatches:
        problems.append(
            f"{len(mismatches)} values differ, in {len({m[0] for m in mismatches})} users"
        )
    return ONLINE_MATCHES_OFFLINE.outcome(
        passed=not problems,
        description="; ".join(problems)
        or f"{compared} sampled users x {len(names)} features: online equals offline",
        metadata={
            "sampled users": len(users),
            "features compared": len(names),
            "served from months": {m: len(r) for m, r in sorted(by_month.items())},
            "not online": ", ".join(not_online[:EXAMPLES]) or "none",
            "differences": markdown_table(
                ["user_id", "feature", "online", "offline"],
                [[str(v) for v in m] for m in mismatches[:20]],
            )
            if mismatches
            else "none",
        },
    )


def _same(online: object, offline: object) -> bool:
    if online is None or offline is None:
        return (online is None and offline is None) or (_nan(online) and _nan(offline))
    if isinstance(online, float) or isinstance(offline, float):
        return math.isclose(float(online), float(offline), rel_tol=1e-9, abs_tol=1e-12)
    return online == offline


def _nan(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
