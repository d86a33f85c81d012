"""The project's Feast repository (`feature_repo/`) as Python objects, and the store over it.

The repository is found through STREAMFLOW_FEATURE_REPO when it is set; otherwise it is the copy
installed with the package (a wheel carries it as `streamflow_assets/feature_repo/`), or, in a
source checkout (an editable install), `feature_repo/` beside the package.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from streamflow_assets.settings import FEATURE_REPO_VAR, Settings

if TYPE_CHECKING:
    from feast import FeatureStore

    from streamflow_assets.adapters.feast import RepoContents

FEATURE_SERVICE = "churn_features"

_PACKAGE = Path(__file__).resolve().parents[1]
_parse_lock = threading.Lock()


def feature_repo(settings: Settings) -> Path:
    """The Feast repository in use."""
    if settings.feature_repo is not None:
        candidates = [settings.feature_repo]
    else:
        candidates = [_PACKAGE / "feature_repo", _PACKAGE.parent / "feature_repo"]
    for folder in candidates:
        if (folder / "feature_store.yaml").is_file():
            return folder
    raise FileNotFoundError(
        f"no Feast repository (feature_store.yaml) in {' or '.join(map(str, candidates))}: set "
        f"{FEATURE_REPO_VAR} to the project's feature_repo/ folder"
    )


def feature_store(settings: Settings) -> FeatureStore:
    """Feast's FeatureStore over the repository, connected through the project's settings: one
    per process and store configuration (each holds connection pools), its registry cache
    refreshed."""
    repo = feature_repo(settings)
    key = (repo, settings.database_url, settings.home, settings.online_store, settings.redis_url)
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = _new_store(settings, repo)
    store.refresh_registry()
    return store


REGISTRY_LOCK = "feast_registry"
"""Feast's SQL registry updates an object by reading it, then writing it back in another
transaction: every writer of ours (apply, materialization intervals, and a process making its
store, which creates the registry's tables) holds this lock, so none loses another's update."""
_stores: dict[tuple, FeatureStore] = {}
_stores_lock = threading.Lock()


def _new_store(settings: Settings, repo: Path) -> FeatureStore:
    from feast import FeatureStore

    from streamflow_assets.db import get_engine
    from streamflow_assets.sql import advisory_lock

    # Feast creates its registry's tables (create_all) the first time a store's `registry` is
    # read, not when the store is made: two processes doing it at once on a new database
    # collide ("relation projects already exists", two months' runs at once), so the registry
    # is made here, one process at a time.
    with advisory_lock(get_engine(settings), REGISTRY_LOCK):
        store = FeatureStore(repo_path=str(repo))
        store.registry  # noqa: B018 - made now, under the lock
        return store


def feast_command(repo: Path, *args: str) -> list[str]:
    """The feast CLI of this interpreter on the repository, e.g. feast_command(repo, "ui")."""
    return [sys.executable, "-m", "feast.cli.cli", "-c", str(repo), *args]


def repo_contents(repo: Path) -> RepoContents:
    """The objects `feast apply` would register, parsed the way the feast CLI does, from the
    files as they are now (a long-lived process re-reads an edited definition)."""
    from streamflow_assets.adapters.feast import parse_repo, repo_files

    with _parse_lock, _working_directory(repo):
        # The repository's modules import each other by bare name (`from entities import user`),
        # as the feast CLI runs them: this repository first on the path, none of them cached.
        if str(repo) in sys.path:
            sys.path.remove(str(repo))
        sys.path.insert(0, str(repo))
        for path in repo_files(repo):
            sys.modules.pop(".".join(path.relative_to(repo).with_suffix("").parts), None)
        return parse_repo(repo)


def definitions_version(repo: Path) -> str:
    """A hash of the repository's files: changes whenever a definition does. Every Python file
    counts (a superset of what the feast CLI reads), so the code location computes it at import
    without loading Feast."""
    python = [
        p
        for p in repo.rglob("*.py")
        if not any(
            part.startswith(".") or part == "__pycache__" for part in p.relative_to(repo).parts
        )
    ]
    digest = hashlib.sha256()
    for path in sorted([*python, repo / "feature_store.yaml"]):
        digest.update(path.relative_to(repo).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@contextlib.contextmanager
def _working_directory(path: Path):
    # parse_repo names modules by their path relative to the working directory.
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)
