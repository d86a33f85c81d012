"""Project settings, read from the environment once and shared by Dagster, Feast, the API and tests.

- STREAMFLOW_DATABASE_URL: PostgreSQL URL; unset starts an embedded PostgreSQL
- STREAMFLOW_HOME (.streamflow): where the embedded PostgreSQL keeps its data
- STREAMFLOW_DROPS_DIR (data/seeds): folder holding month_000, month_001, ...
- STREAMFLOW_FIRST_MONTH (2024-01): the month that month_000 describes, YYYY-MM
- STREAMFLOW_OUTPUT_DIR (data/processed): training CSVs and other outputs
- STREAMFLOW_FEATURE_REPO: the Feast repository; unset, the one installed with the package
- STREAMFLOW_MODEL_WINDOW (12): how many months before M the churn model of month M trains on
- STREAMFLOW_ONLINE_DEADLINE_DAY (5): the day of the next month by which a month must be online
  (the `online_features` freshness check goes red after it)
- STREAMFLOW_ONLINE_STORE (postgres): Feast's online store: `postgres` (the settings' database),
  `redis` or `redis_cluster` (Feast's Redis online store at STREAMFLOW_REDIS_URL)
- STREAMFLOW_REDIS_URL (redis://127.0.0.1:6379/0): the Redis server, or one node of the cluster
- STREAMFLOW_BACKGROUND_CPUS (unset: no limit): CPU time, in CPUs (e.g. 0.5), that the bulk work
  done while the API serves (the online write and its checks) may use together, where the
  database server runs on this machine and its processes can be put in a cgroup

Relative paths are taken from the project folder: the nearest folder at or above the working
directory that holds `workspace.yaml` (else the working directory), so `cd feature_repo && feast
apply` finds the same embedded PostgreSQL and folders as Dagster run from the project root.
"""

from __future__ import annotations

import calendar
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

DATABASE_URL_VAR = "STREAMFLOW_DATABASE_URL"
HOME_VAR = "STREAMFLOW_HOME"
DROPS_DIR_VAR = "STREAMFLOW_DROPS_DIR"
FIRST_MONTH_VAR = "STREAMFLOW_FIRST_MONTH"
OUTPUT_DIR_VAR = "STREAMFLOW_OUTPUT_DIR"
FEATURE_REPO_VAR = "STREAMFLOW_FEATURE_REPO"
MODEL_WINDOW_VAR = "STREAMFLOW_MODEL_WINDOW"
ONLINE_DEADLINE_DAY_VAR = "STREAMFLOW_ONLINE_DEADLINE_DAY"
ONLINE_STORE_VAR = "STREAMFLOW_ONLINE_STORE"
REDIS_URL_VAR = "STREAMFLOW_REDIS_URL"
BACKGROUND_CPUS_VAR = "STREAMFLOW_BACKGROUND_CPUS"
ONLINE_STORES = ("postgres", "redis", "redis_cluster")

DEFAULTS = {
    DATABASE_URL_VAR: "",
    HOME_VAR: ".streamflow",
    DROPS_DIR_VAR: "data/seeds",
    FIRST_MONTH_VAR: "2024-01",
    OUTPUT_DIR_VAR: "data/processed",
    FEATURE_REPO_VAR: "",
    MODEL_WINDOW_VAR: "12",
    ONLINE_DEADLINE_DAY_VAR: "5",
    ONLINE_STORE_VAR: "postgres",
    REDIS_URL_VAR: "redis://127.0.0.1:6379/0",
    BACKGROUND_CPUS_VAR: "",
}
"""Every setting and its default; an empty value means unset."""

_MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")


class SettingsError(ValueError):
    """A setting is missing or wrong; the message names the variable to set."""


class DropFolderError(ValueError):
    """A folder in STREAMFLOW_DROPS_DIR maps to no partition; the message names it."""


@dataclass(frozen=True)
class Settings:
    database_url: URL | None
    """The external PostgreSQL, or None for the embedded one under `home`."""
    home: Path
    drops_dir: Path
    first_month: date
    """First day of the month that month_000 describes."""
    output_dir: Path
    feature_repo: Path | None = None
    """The Feast repository (feature_repo/); None: the one installed with the package."""
    model_window: int = 12
    online_deadline_day: int = 5
    online_store: str = "postgres"
    """One of ONLINE_STORES: `redis_cluster` is Feast's `redis_type: redis_cluster`."""
    redis_url: str = DEFAULTS[REDIS_URL_VAR]
    background_cpus: float | None = None
    """The CPUs the online write's server sessions may use together; None: no limit."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings in the environment (unset or empty variables take their defaults)."""
        env = os.environ if environ is None else environ
        return cls.from_values({var: env.get(var, "") for var in DEFAULTS})

    @classmethod
    def from_values(cls, values: Mapping[str, str]) -> Settings:
        """Settings from raw values keyed by variable name, as the environment would hold them;
        relative paths are taken from the project folder."""
        base = project_dir()

        def raw(var: str) -> str:
            return (values.get(var) or "").strip() or DEFAULTS[var]

        def path(var: str) -> Path:
            return base / Path(raw(var)).expanduser()

        return cls(
            database_url=parse_database_url(raw(DATABASE_URL_VAR)),
            home=path(HOME_VAR),
            drops_dir=path(DROPS_DIR_VAR),
            first_month=parse_month(raw(FIRST_MONTH_VAR)),
            output_dir=path(OUTPUT_DIR_VAR),
            feature_repo=path(FEATURE_REPO_VAR) if raw(FEATURE_REPO_VAR) else None,
            model_window=parse_window(raw(MODEL_WINDOW_VAR)),
            online_deadline_day=parse_day(raw(ONLINE_DEADLINE_DAY_VAR)),
            online_store=parse_online_store(raw(ONLINE_STORE_VAR)),
            redis_url=parse_redis_url(raw(REDIS_URL_VAR), raw(ONLINE_STORE_VAR)),
            background_cpus=parse_cpus(raw(BACKGROUND_CPUS_VAR)),
        )


def project_dir(start: Path | None = None) -> Path:
    """The folder relative settings are taken from: the nearest one holding workspace.yaml."""
    start = (start or Path.cwd()).absolute()
    for folder in (start, *start.parents):
        if (folder / "workspace.yaml").is_file():
            return folder
    return start


def parse_database_url(raw: str) -> URL | None:
    """The SQLAlchemy URL (psycopg 3 driver) for a PostgreSQL URL; None for an empty value."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        url = make_url(raw)
    except ArgumentError:
        raise SettingsError(
            f"{DATABASE_URL_VAR} is not a URL: set it like "
            "postgresql://user:password@host:5432/dbname, or unset it to use the embedded "
            "PostgreSQL"
        ) from None
    if url.get_backend_name() not in ("postgresql", "postgres"):
        raise SettingsError(
            f"{DATABASE_URL_VAR} must be a postgresql:// URL, got a {url.get_backend_name()!r} "
            "URL; unset it to use the embedded PostgreSQL"
        )
    if not url.database:
        raise SettingsError(
            f"{DATABASE_URL_VAR} names no database: add it after the host, "
            "like postgresql://user@host:5432/streamflow"
        )
    return url.set(drivername="postgresql+psycopg")


def parse_month(raw: str, var: str = FIRST_MONTH_VAR) -> date:
    match = _MONTH_RE.match(raw)
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise SettingsError(f"{var} must be a month written YYYY-MM (like 2024-01), got {raw!r}")
    return date(int(match.group(1)), int(match.group(2)), 1)


def parse_day(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 28:
        raise SettingsError(
            f"{ONLINE_DEADLINE_DAY_VAR} must be a day of the month from 1 to 28, got {raw!r}"
        )
    return int(raw)


def parse_window(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 120:
        raise SettingsError(
            f"{MODEL_WINDOW_VAR} must be a whole number of months from 1 to 120, got {raw!r}"
        )
    return int(raw)


def parse_online_store(raw: str) -> str:
    if raw not in ONLINE_STORES:
        raise SettingsError(
            f"{ONLINE_STORE_VAR} must be one of {', '.join(ONLINE_STORES)}, got {raw!r}"
        )
    return raw


def parse_cpus(raw: str) -> float | None:
    if not raw:
        return None
    try:
        cpus = float(raw)
    except ValueError:
        cpus = float("nan")
    if not 0.01 <= cpus <= 4096:  # also false for nan
        raise SettingsError(
            f"{BACKGROUND_CPUS_VAR} must be a number of CPUs from 0.01 up (e.g. 0.5), or unset "
            f"for no limit, got {raw!r}"
        )
    return cpus


def parse_redis_url(raw: str, online_store: str = "redis") -> str:
    """A redis:// (or rediss://) URL with a host, and a database number if any (only 0 for a
    cluster, which has no other)."""
    url = urlsplit(raw)
    shown = raw.replace(f"{url.netloc.rpartition('@')[0]}@", "***@") if "@" in url.netloc else raw
    try:
        url.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        url = None
    if url is None or url.scheme not in ("redis", "rediss") or not url.hostname:
        raise SettingsError(
            f"{REDIS_URL_VAR} must be a URL like redis://host:6379/0, got {shown!r}"
        )
    if url.path.strip("/") and not url.path.strip("/").isdigit():
        raise SettingsError(
            f"{REDIS_URL_VAR}: the path is the database number (like /0), got {shown!r}"
        )
    if online_store == "redis_cluster" and int(url.path.strip("/") or 0) != 0:
        raise SettingsError(
            f"{REDIS_URL_VAR}: a Redis Cluster has only database 0 "
            f"({ONLINE_STORE_VAR}=redis_cluster), got {shown!r}"
        )
    return raw


def add_months(month: date, n: int) -> date:
    """The first day of the month n months after `month`."""
    index = month.year * 12 + month.month - 1 + n
    return date(index // 12, index % 12 + 1, 1)


def month_end(month: date) -> date:
    """The as_of of a month: its last day."""
    return month.replace(day=calendar.monthrange(month.year, month.month)[1])


def redacted(url: URL) -> str:
    """A URL that is safe to print in an error or a log."""
    return url.render_as_string(hide_password=True)
