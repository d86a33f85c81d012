"""The project's Feast repository (`feature_repo/`) as Python objects."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sys
import threading
from pathlib import Path

from feast import FeatureStore
from feast.repo_contents import RepoContents
from feast.repo_operations import get_repo_files, parse_repo
from sqlalchemy.engine import URL

from streamflow_assets.settings import Settings

FEATURE_REPO = Path(__file__).resolve().parents[2] / "feature_repo"
"""feature_repo/ beside the package (the project is installed editable, here and in docker/)."""

FEATURE_SERVICE = "churn_features"

_parse_lock = threading.Lock()


def feature_store() -> FeatureStore:
    """Feast's FeatureStore over feature_repo/, connected through the project's settings: one
    per process and database (each holds connection pools), its registry cache refreshed."""
    settings = Settings.from_env()
    store = _store(settings.database_url, settings.home)
    store.refresh_registry()
    return store


@functools.cache
def _store(database_url: URL | None, home: Path) -> FeatureStore:
    return FeatureStore(repo_path=str(FEATURE_REPO))


def feast_command(*args: str) -> list[str]:
    """The feast CLI of this interpreter on feature_repo/, e.g. feast_command("ui")."""
    return [sys.executable, "-m", "feast.cli.cli", "-c", str(FEATURE_REPO), *args]


def repo_contents() -> RepoContents:
    """The objects `feast apply` would register, parsed the way the feast CLI does."""
    with _parse_lock, _working_directory(FEATURE_REPO):
        if str(FEATURE_REPO) not in sys.path:
            sys.path.insert(0, str(FEATURE_REPO))
        return parse_repo(FEATURE_REPO)


def definitions_version() -> str:
    """A hash of feature_repo's files: changes whenever a definition does."""
    digest = hashlib.sha256()
    files = [*get_repo_files(FEATURE_REPO), FEATURE_REPO / "feature_store.yaml"]
    for path in sorted(files):
        digest.update(path.relative_to(FEATURE_REPO).as_posix().encode())
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
