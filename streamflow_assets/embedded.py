"""The embedded PostgreSQL a new user gets when STREAMFLOW_DATABASE_URL is unset.

The server comes from pgserver (real PostgreSQL binaries installed by pip) and lives under
STREAMFLOW_HOME/pgdata. The first process that needs it starts it; every later process (Dagster
runs, the API, the feast CLI, tests) attaches to the running server through its Unix socket. It is
never stopped by a process exiting — `streamflow db stop` stops it. A server killed uncleanly
leaves a postmaster.pid naming a dead process: the next process starts a new server on the same
data, and PostgreSQL's crash recovery brings the data back to its last committed state.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import fasteners
import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from streamflow_assets.adapters import pgserver
from streamflow_assets.adapters.pgserver import (
    POSTGRES_BIN_PATH,
    PostgresServer,
    PostmasterInfo,
    ensure_user_exists,
)
from streamflow_assets.settings import HOME_VAR, SettingsError

DATABASE = "streamflow"
SUPERUSER = "postgres"
SYSTEM_USER = "pgserver"
"""Started as root, pgserver runs PostgreSQL as this system user (PostgreSQL refuses root)."""

SERVER_SETTINGS = {
    # Tables created and filled in one transaction (staging casts, live-table rebuilds, snapshot
    # months) then skip the WAL. The price: no streaming replication or point-in-time recovery
    # from this server, which a local embedded database does not offer anyway.
    "wal_level": "minimal",
    "max_wal_senders": "0",
    # Bulk loads of a million rows otherwise trigger checkpoint after checkpoint.
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "shared_buffers": "512MB",
    "maintenance_work_mem": "256MB",
}
"""Written to postgresql.conf when the embedded server is created; an external server keeps
its own settings."""


INITDB_LOCALE = ("--lc-collate=C",)
"""Text compared and sorted in byte order (character classes and case still follow the
environment's locale): PostgreSQL then compares text with memcmp and abbreviated keys, where any
other collation goes through the C library's strcoll. Every primary key, sort and uniqueness check
on user ids gains from it (a primary key on 10M ids built in 25-30 s instead of 77-85 s); ids,
feature and month names are ASCII, whose byte order is the order people expect."""


class EmbeddedServerError(RuntimeError):
    """The embedded PostgreSQL could not be started; the message says what to change."""


def pgdata_dir(home: Path) -> Path:
    return home / "pgdata"


def running_server(home: Path) -> PostmasterInfo | None:
    """The running server's postmaster.pid, or None when no server runs on this home."""
    try:
        info = PostmasterInfo.read_from_pgdata(pgdata_dir(home))
    except (AssertionError, ValueError):
        # Another process is between initdb and a ready server: the file is half-written.
        return None
    if info is None or not info.is_running() or info.status != "ready":
        return None
    return info


def ensure_server(home: Path) -> URL:
    """The URL of the embedded server's `streamflow` database, starting the server if needed."""
    info = running_server(home)
    if info is None:
        info = _start(home)
    url = _url(info, DATABASE)
    _ensure_database(info)
    return url


def stop_server(home: Path) -> bool:
    """Stop the embedded server; False when none was running."""
    info = running_server(home)
    if info is None:
        return False
    pgserver.pg_ctl(
        ["-m", "fast", "-w", "stop"],
        pgdata=pgdata_dir(home),
        user=SYSTEM_USER if _is_root() else None,
    )
    return True


def _start(home: Path) -> PostmasterInfo:
    home.mkdir(parents=True, exist_ok=True)
    if _is_root():
        _check_traversable(home, HOME_VAR)
        _check_traversable(POSTGRES_BIN_PATH, None)
    pgdata = pgdata_dir(home)
    pgdata.mkdir(exist_ok=True)
    try:
        # Processes starting at once: one creates and starts the server, the others attach.
        with fasteners.InterProcessLock(home / ".start.lock"):
            if (info := running_server(home)) is not None:
                return info
            if not (pgdata / "PG_VERSION").exists():
                _init_pgdata(pgdata)
            # cleanup_mode=None: the server outlives this process, later processes attach to it.
            server = PostgresServer(pgdata, cleanup_mode=None)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log = pgdata_dir(home) / "log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise EmbeddedServerError(
            f"the embedded PostgreSQL under {home} did not start ({exc}). "
            f"Server log {log}:\n{tail}\nSet {HOME_VAR} to another folder, or set "
            "STREAMFLOW_DATABASE_URL to use an existing PostgreSQL."
        ) from exc
    return server.get_postmaster_info()


def _init_pgdata(pgdata: Path) -> None:
    """initdb as pgserver does it, plus SERVER_SETTINGS, before the server first starts."""
    user = None
    if _is_root():
        entry = ensure_user_exists(SYSTEM_USER)
        os.chown(pgdata, entry.pw_uid, entry.pw_gid)
        user = SYSTEM_USER
    pgserver.initdb(
        ["--auth=trust", "--auth-local=trust", "--encoding=utf8", *INITDB_LOCALE, "-U", SUPERUSER],
        pgdata=pgdata,
        user=user,
    )
    with open(pgdata / "postgresql.conf", "a") as conf:
        conf.write("\n# streamflow: settings for bulk loads (streamflow_assets/embedded.py)\n")
        conf.writelines(f"{name} = '{value}'\n" for name, value in SERVER_SETTINGS.items())


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _check_traversable(folder: Path, variable: str | None) -> None:
    """As root, PostgreSQL runs as another user, who must reach its data and its binaries.

    pgserver would otherwise open up every folder above them (chmod o+rx, /root included);
    we refuse and say which folders are closed.
    """
    folder = folder.resolve()
    closed = [str(f) for f in (folder, *folder.parents) if not f.stat().st_mode & stat.S_IXOTH]
    if not closed:
        return
    what = f"{variable}={folder}" if variable else f"the PostgreSQL binaries in {folder}"
    instead = (
        f"set {variable} to a folder under a traversable path (for example /var/lib/streamflow)"
        if variable
        else "install the project in a virtualenv outside these folders"
    )
    raise SettingsError(
        f"{what} cannot be used by the embedded PostgreSQL: started as root, it runs as the "
        f"system user '{SYSTEM_USER}', which must be able to traverse every folder above it, "
        f"and cannot enter {', '.join(closed)}. Either `chmod o+x {' '.join(closed)}`, or "
        f"{instead}, or set STREAMFLOW_DATABASE_URL to use an existing PostgreSQL."
    )


def _url(info: PostmasterInfo, database: str) -> URL:
    # pgserver listens on a Unix socket only; libpq takes the socket folder as `host`.
    return URL.create(
        "postgresql+psycopg",
        username=SUPERUSER,
        database=database,
        query={"host": str(info.socket_dir), "port": str(info.port)},
    )


def _ensure_database(info: PostmasterInfo) -> None:
    conninfo = psycopg.conninfo.make_conninfo(
        host=str(info.socket_dir), port=info.port, user=SUPERUSER, dbname="postgres"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        # Processes starting at once would race between the check and the CREATE.
        conn.execute("SELECT pg_advisory_lock(hashtext('streamflow: create database'))")
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
        if not found.fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
