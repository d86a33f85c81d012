"""Group `feature_store`: `feast_registry` (feast apply) and `online_features` (materialize).

Both are monthly like everything else, so `--select '*' --partition M` runs a whole month.
"""

import dagster as dg

from streamflow_assets.checks import (
    EVERY_USER_ONLINE,
    ONLINE_MATCHES_OFFLINE,
    REGISTRY_MATCHES_REPO,
)
from streamflow_assets.defs.common import as_failures, check_result, check_spec, metadata
from streamflow_assets.defs.partitions import monthly_partitions
from streamflow_assets.defs.resources import StreamflowSettings
from streamflow_assets.feature_store.repo import (
    FEATURE_SERVICE,
    definitions_version,
    feature_repo,
    feature_store,
)
from streamflow_assets.months import as_of
from streamflow_assets.report import Markdown
from streamflow_assets.settings import Settings
from streamflow_assets.table_specs import SNAPSHOT_TABLES

FEATURE_VIEW_SNAPSHOTS = [s.snapshot.name for s in SNAPSHOT_TABLES if s.snapshot.feature_view]


@dg.asset(
    group_name="feature_store",
    partitions_def=monthly_partitions,
    deps=FEATURE_VIEW_SNAPSHOTS,
    code_version=definitions_version(feature_repo(Settings.from_env())),
    kinds={"feast", "postgres"},
    check_specs=[check_spec(REGISTRY_MATCHES_REPO, "feast_registry")],
)
def feast_registry(context: dg.AssetExecutionContext, streamflow: StreamflowSettings):
    """Feast's registry, `feast apply` of `feature_repo/`: the `user` entity, a PostgreSQL source
    per snapshot table, the four feature views, the derived on-demand features and the
    `churn_features` service, stored in the SQL registry (schema `feast_registry`).

    Idempotent: applying unchanged definitions changes nothing. The code version is a hash of
    feature_repo's files, so after an edit this asset shows as stale until it is applied."""
    from streamflow_assets.feature_store.registry import apply_repo, verify_registry

    settings = streamflow.settings()
    engine = streamflow.engine()  # a clear error if the database does not answer
    store, repo = feature_store(settings), feature_repo(settings)
    changes = apply_repo(engine, store, repo)
    counts = {kind: len(items) for kind, items in changes.items()}
    context.log.info("feast apply: %s", counts)
    yield dg.MaterializeResult(
        metadata=metadata(
            {
                "project": store.project,
                "feature repo": str(repo),
                "definitions version": definitions_version(repo),
                **{
                    kind: Markdown("\n".join(f"- {c}" for c in sorted(items)) or "none")
                    for kind, items in changes.items()
                    if kind != "unchanged"
                },
                "unchanged objects": counts["unchanged"],
                "feature views": sorted(fv.name for fv in store.list_feature_views()),
                "feature service": FEATURE_SERVICE,
            }
        )
    )
    yield check_result(verify_registry(engine, store, repo), "feast_registry")


@dg.asset(
    group_name="feature_store",
    partitions_def=monthly_partitions,
    deps=[feast_registry],
    kinds={"feast", "postgres"},
    check_specs=[
        check_spec(EVERY_USER_ONLINE, "online_features"),
        check_spec(ONLINE_MATCHES_OFFLINE, "online_features"),
    ],
)
def online_features(context: dg.AssetExecutionContext, streamflow: StreamflowSettings):
    """Feast's online store (PostgreSQL, schema `feast_online`; or Redis, as
    STREAMFLOW_ONLINE_STORE says) after materializing the month: every feature view's values
    with event time inside the partition's window.

    Per user the newest month wins: re-running an old month after a newer one leaves the newer
    values online. Written in Feast's own format, encoded by PostgreSQL (see
    `streamflow_assets/feature_store/online.py`): in PostgreSQL every feature view's table is
    rebuilt beside the live one, then all are swapped in in one transaction; in Redis
    (`redis_online.py`) each user's views go in one HSET. Either way the API and `feast serve`
    keep answering meanwhile and never serve one user two months."""
    from streamflow_assets.feature_store.materialize import materialize_month
    from streamflow_assets.feature_store.verify import every_user_online, online_matches_offline

    window = context.partition_time_window
    engine, store = streamflow.engine(), feature_store(streamflow.settings())
    with as_failures():
        written = materialize_month(engine, store, window.start, window.end)
    yield dg.MaterializeResult(
        metadata=metadata({"as_of": str(as_of(context.partition_key)), **written})
    )
    month = context.partition_key
    yield check_result(every_user_online(engine, store, month), "online_features")
    yield check_result(online_matches_offline(engine, store, month), "online_features")


def deadline_cron(settings: Settings) -> str:
    """Midnight UTC of STREAMFLOW_ONLINE_DEADLINE_DAY, every month."""
    return f"0 0 {settings.online_deadline_day} * *"


online_freshness_checks = dg.build_time_partition_freshness_checks(
    assets=[online_features], deadline_cron=deadline_cron(Settings.from_env()), timezone="UTC"
)
"""Red when, at the month's deadline (STREAMFLOW_ONLINE_DEADLINE_DAY of the next month), the
month that ended has not been materialized online; evaluated by `online_freshness_sensor`."""
