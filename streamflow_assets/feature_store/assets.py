"""The feature store assets: `feast_registry` (feast apply) and `online_features` (materialize).

Both are monthly like everything else, so `--select '*' --partition M` runs a whole month.
"""

from concurrent.futures import ThreadPoolExecutor

import dagster as dg
from feast.diff.property_diff import TransitionType
from feast.project import Project
from feast.repo_operations import extract_objects_for_apply_delete

from streamflow_assets.feature_store.online import write_month
from streamflow_assets.feature_store.repo import (
    FEATURE_REPO,
    FEATURE_SERVICE,
    definitions_version,
    feature_store,
    repo_contents,
)
from streamflow_assets.partitions import as_of, monthly_partitions
from streamflow_assets.resources import StreamflowDatabase
from streamflow_assets.table_specs import SNAPSHOT_TABLES
from streamflow_assets.warehouse import markdown_table

FEATURE_VIEW_SNAPSHOTS = [s.snapshot.name for s in SNAPSHOT_TABLES if s.snapshot.feature_view]

WRITE_THREADS = 2


@dg.asset(
    group_name="feature_store",
    partitions_def=monthly_partitions,
    deps=FEATURE_VIEW_SNAPSHOTS,
    code_version=definitions_version(),
    kinds={"feast", "postgres"},
)
def feast_registry(context: dg.AssetExecutionContext, database: StreamflowDatabase):
    """Feast's registry, `feast apply` of `feature_repo/`: the `user` entity, a PostgreSQL source
    per snapshot table, the four feature views, the derived on-demand features and the
    `churn_features` service, stored in the SQL registry (schema `feast_registry`).

    Idempotent: applying unchanged definitions changes nothing. The code version is a hash of
    feature_repo's files, so after an edit this asset shows as stale until it is applied."""
    database.engine()  # a clear error if the database does not answer
    store = feature_store()
    repo = repo_contents()
    if not repo.projects:
        repo.projects.append(Project(name=store.project))
    registry_diff, _, _ = store.plan(repo)
    to_apply, to_delete, _, _ = extract_objects_for_apply_delete(
        store.project, store.registry, repo
    )
    store.apply(to_apply, objects_to_delete=to_delete, partial=False)

    changes: dict[str, list[str]] = {"created": [], "updated": [], "deleted": [], "unchanged": []}
    names = {
        TransitionType.CREATE: "created",
        TransitionType.UPDATE: "updated",
        TransitionType.DELETE: "deleted",
        TransitionType.UNCHANGED: "unchanged",
    }
    for diff in registry_diff.feast_object_diffs:
        kind = names.get(diff.transition_type)
        if kind:
            changes[kind].append(f"{diff.feast_object_type.value} {diff.name}")
    context.log.info(
        "feast apply: %s", {k: len(v) for k, v in changes.items()} if any(changes.values()) else 0
    )
    return dg.MaterializeResult(
        metadata={
            "project": store.project,
            "feature repo": str(FEATURE_REPO),
            "definitions version": definitions_version(),
            **{
                kind: dg.MetadataValue.md("\n".join(f"- {c}" for c in sorted(items)) or "none")
                for kind, items in changes.items()
                if kind != "unchanged"
            },
            "unchanged objects": len(changes["unchanged"]),
            "feature views": sorted(fv.name for fv in store.list_feature_views()),
            "feature service": FEATURE_SERVICE,
        }
    )


@dg.asset(
    group_name="feature_store",
    partitions_def=monthly_partitions,
    deps=[feast_registry],
    kinds={"feast", "postgres"},
)
def online_features(context: dg.AssetExecutionContext, database: StreamflowDatabase):
    """Feast's online store (PostgreSQL, schema `feast_online`) after materializing the month:
    every feature view's values with event time inside the partition's window.

    Per user the newest month wins: re-running an old month after a newer one leaves the newer
    values online. Written with set-based SQL in Feast's own format (see
    `streamflow_assets/feature_store/online.py`), each feature view's table rebuilt beside the
    live one and swapped in, so the API and `feast serve` keep answering meanwhile."""
    engine = database.engine()
    store = feature_store()
    window = context.partition_time_window
    views = store.list_feature_views()
    if not views:
        raise dg.Failure("the registry holds no feature view: materialize feast_registry first")

    def write(view):
        try:
            return write_month(engine, store.config, view, window.start, window.end)
        except LookupError as exc:
            raise dg.Failure(str(exc)) from None

    with ThreadPoolExecutor(WRITE_THREADS) as pool:
        written = list(pool.map(write, views))
    for view in views:
        store.registry.apply_materialization(view, store.project, window.start, window.end)

    metadata: dict = {
        "as_of": str(as_of(context.partition_key)),
        "window": f"[{window.start.isoformat()}, {window.end.isoformat()})",
        "online rows written": sum(w["rows written"] for w in written),
        "seconds": round(max(w["seconds"] for w in written), 2),
        "by feature view": dg.MetadataValue.md(
            markdown_table(list(written[0]), [list(w.values()) for w in written])
        ),
    }
    return dg.MaterializeResult(metadata=metadata)
