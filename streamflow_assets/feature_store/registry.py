"""`feast apply` of the repository into the SQL registry, reporting what changed."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from feast import FeatureStore
from sqlalchemy.engine import Engine

from streamflow_assets.adapters.feast import Project, RepoContents, TransitionType, apply_plan
from streamflow_assets.checks import REGISTRY_MATCHES_REPO
from streamflow_assets.feature_store.repo import REGISTRY_LOCK, repo_contents
from streamflow_assets.report import CheckOutcome, Markdown
from streamflow_assets.sql import advisory_lock

_CHANGES = {
    TransitionType.CREATE: "created",
    TransitionType.UPDATE: "updated",
    TransitionType.DELETE: "deleted",
    TransitionType.UNCHANGED: "unchanged",
}


def plan_repo(store: FeatureStore, repo: Path) -> tuple[RepoContents, dict[str, list[str]]]:
    """The repository's objects, and what applying them would create, update (in substance:
    Feast's own timestamps and materialization state aside), delete or leave unchanged."""
    contents = repo_contents(repo)
    if not contents.projects:
        contents.projects.append(Project(name=store.project))
    registry_diff, _, _ = store.plan(contents)
    changes: dict[str, list[str]] = {kind: [] for kind in _CHANGES.values()}
    for diff in registry_diff.feast_object_diffs:
        kind = _CHANGES.get(diff.transition_type)
        changed = _changed(diff)
        if kind == "updated" and not changed:
            kind = "unchanged"
        if kind:
            detail = f" ({', '.join(changed)})" if kind == "updated" else ""
            changes[kind].append(f"{diff.feast_object_type.value} {diff.name}{detail}")
    return contents, changes


def apply_repo(engine: Engine, store: FeatureStore, repo: Path) -> dict[str, list[str]]:
    """Apply the repository's definitions when they differ in substance from the registry
    (otherwise nothing is written: applying unchanged definitions changes nothing); the objects
    created, updated, deleted and unchanged, as "<type> <name>"."""
    with advisory_lock(engine, REGISTRY_LOCK):
        contents, changes = plan_repo(store, repo)
        if changes["created"] or changes["updated"] or changes["deleted"]:
            to_apply, to_delete = apply_plan(store, contents)
            store.apply(to_apply, objects_to_delete=to_delete, partial=False)
    return changes


def record_intervals(engine: Engine, store: FeatureStore, start: datetime, end: datetime) -> None:
    """Add [start, end) to every feature view's materialization intervals (what Feast's UI and
    `feast materialize-incremental` read), unless it is there already."""
    with advisory_lock(engine, REGISTRY_LOCK):
        for view in store.registry.list_feature_views(store.project, allow_cache=False):
            if (start, end) not in view.materialization_intervals:
                store.registry.apply_materialization(view, store.project, start, end)


_COMPATIBLE = {
    "Int64": {"smallint", "integer", "bigint"},
    "Int32": {"smallint", "integer"},
    "Float64": {"numeric", "double precision", "real"},
    "Float32": {"real", "double precision", "numeric"},
    "Bool": {"boolean"},
    "String": {"text", "character varying"},
}
"""PostgreSQL column types a Feast field type may be read from."""


_RUN_STATE = ("materialization_intervals", "meta")
"""What materializing changes on a feature view: not a difference from the repository."""


def _without_meta(value):
    """A protobuf value without its `meta` (creation and update times Feast stamps on every
    object it builds, so a freshly parsed source never equals the registered one)."""
    if hasattr(value, "HasField") and "meta" in getattr(value.DESCRIPTOR, "fields_by_name", {}):
        value = type(value).FromString(value.SerializeToString())
        value.ClearField("meta")
    return value


def _changed(diff) -> list[str]:
    """The properties of an object diff that differ in substance."""
    return [
        p.property_name
        for p in diff.feast_object_property_diffs
        if p.property_name.split(".")[0] not in _RUN_STATE
        and _without_meta(p.val_existing) != _without_meta(p.val_declared)
    ]


def verify_registry(engine: Engine, store: FeatureStore, repo: Path) -> CheckOutcome:
    """The registry is what the repository says, and the sources hold what the views read."""
    _, changes = plan_repo(store, repo)
    pending = [
        f"{item}: {kind[:-1]}"
        for kind in ("created", "updated", "deleted")
        for item in changes[kind]
    ]
    problems = []
    with engine.connect() as conn:
        for view in store.list_feature_views(allow_cache=False):
            table = view.batch_source.get_table_query_string()
            columns = dict(
                conn.execute(
                    sa.text(
                        "SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_schema = current_schema() AND table_name = :t"
                    ),
                    {"t": table},
                ).all()
            )
            if not columns:
                problems.append(f"{view.name}: source table {table} does not exist")
                continue
            for field in view.features:
                found = columns.get(field.name)
                allowed = _COMPATIBLE.get(str(field.dtype), set())
                if found is None:
                    problems.append(f"{view.name}: {table} has no column {field.name}")
                elif found not in allowed:
                    problems.append(
                        f"{view.name}: {table}.{field.name} is {found}, not a {field.dtype} type"
                    )
    return REGISTRY_MATCHES_REPO.outcome(
        passed=not pending and not problems,
        description="; ".join(pending + problems)
        or "the registry matches the repository; every source column is there",
        metadata={
            "pending changes": Markdown("\n".join(f"- {p}" for p in pending) or "none"),
            "source problems": Markdown("\n".join(f"- {p}" for p in problems) or "none"),
        },
    )
