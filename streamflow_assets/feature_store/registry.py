"""`feast apply` of the repository into the SQL registry, reporting what changed."""

from __future__ import annotations

from pathlib import Path

from feast import FeatureStore

from streamflow_assets.adapters.feast import Project, TransitionType, apply_plan
from streamflow_assets.feature_store.repo import repo_contents

_CHANGES = {
    TransitionType.CREATE: "created",
    TransitionType.UPDATE: "updated",
    TransitionType.DELETE: "deleted",
    TransitionType.UNCHANGED: "unchanged",
}


def apply_repo(store: FeatureStore, repo: Path) -> dict[str, list[str]]:
    """Apply the repository's definitions (idempotent: unchanged definitions change nothing);
    the objects created, updated, deleted and unchanged, as "<type> <name>"."""
    contents = repo_contents(repo)
    if not contents.projects:
        contents.projects.append(Project(name=store.project))
    registry_diff, _, _ = store.plan(contents)
    to_apply, to_delete = apply_plan(store, contents)
    store.apply(to_apply, objects_to_delete=to_delete, partial=False)
    changes: dict[str, list[str]] = {kind: [] for kind in _CHANGES.values()}
    for diff in registry_diff.feast_object_diffs:
        if kind := _CHANGES.get(diff.transition_type):
            changes[kind].append(f"{diff.feast_object_type.value} {diff.name}")
    return changes
