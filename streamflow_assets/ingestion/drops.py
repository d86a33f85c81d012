"""Finding a month's drop file, reading its header, and staging it in PostgreSQL with COPY."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from streamflow_assets.months import drop_folder
from streamflow_assets.settings import Settings
from streamflow_assets.sql import COPY_CHUNK, NO_AUTOVACUUM, copy_in, file_chunks, ident
from streamflow_assets.table_specs import DROP_FILES, TableSpec
from streamflow_assets.warehouse import PG_TYPES, STAGING_SCHEMA, staging_name


class DropError(ValueError):
    """A drop file cannot be read or staged; the message names the file."""


@dataclass(frozen=True)
class DropFile:
    spec: TableSpec
    partition: str
    path: Path
    header: tuple[str, ...]
    """Column names as the file has them (a UTF-8 BOM removed)."""
    data_rows: int
    """Lines after the header: the rows COPY must stage."""
    stamp: tuple[int, int] = (0, 0)
    """The file's size and mtime_ns when it was read: what the new-drop sensor compares to tell
    whether a month's files changed since they were last loaded."""


def _kind(path: Path) -> str:
    if path.is_symlink() and not path.exists():
        return "a broken symbolic link"
    target = f"a symbolic link to {path.resolve()}, " if path.is_symlink() else ""
    mode = path.stat().st_mode
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return target + name
    return target + "not a regular file"


def open_drop_file(settings: Settings, spec: TableSpec, partition: str) -> DropFile:
    folder = drop_folder(settings, partition)
    if not folder.is_dir():
        raise DropError(
            f"partition {partition} has no drop folder: {folder} does not exist "
            f"(STREAMFLOW_DROPS_DIR={settings.drops_dir})"
        )
    path = folder / spec.file_name
    if not path.is_file():
        if path.exists() or path.is_symlink():
            raise DropError(
                f"{path} is not a regular file ({_kind(path)}): a drop file must be a CSV file"
            )
        raise DropError(f"{path} is missing: a month's drop has {', '.join(DROP_FILES)}")
    with open(path, "rb") as f:
        info = os.fstat(f.fileno())
        first = f.readline()
        if not first.strip():
            raise DropError(f"{path} is empty: expected a header row and one row per user")
        newlines, last = first.count(b"\n"), first
        while chunk := f.read(COPY_CHUNK):
            newlines += chunk.count(b"\n")
            last = chunk
    try:
        line = first.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        raise DropError(f"{path}: the header row is not UTF-8 text") from None
    header = tuple(h.strip() for h in next(csv.reader([line])))
    lines = newlines + (0 if last.endswith(b"\n") else 1)
    stamp = (info.st_size, info.st_mtime_ns)
    return DropFile(spec, partition, path, header, data_rows=lines - 1, stamp=stamp)


def stage_raw(engine: Engine, drop: DropFile) -> str:
    """COPY the file into a new table of TEXT columns (every spec column; absent ones stay NULL).

    Values are staged as text so that a value that does not parse is reported by validation,
    with its user_id, instead of aborting the COPY.
    """
    name = staging_name(drop.spec.name, drop.partition, "raw")
    table = ident(STAGING_SCHEMA, name)
    columns = ", ".join(f"{ident(c.name)} text" for c in drop.spec.columns)
    # The header was checked against the spec before staging: these are spec column names.
    file_columns = [drop.spec.column(h).name for h in drop.header]
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE UNLOGGED TABLE {table} ({columns})"))
            copy_in(conn, table, file_columns, file_chunks(drop.path), header=True)
            # Fresh tables have no statistics: validation queries would get poor plans.
            conn.execute(sa.text(f"ANALYZE {table}"))
    except (psycopg.Error, sa.exc.DBAPIError) as exc:
        error = getattr(exc, "orig", None) or exc
        diag = getattr(error, "diag", None)
        detail = (diag.message_primary if diag else None) or str(error)
        where = (diag.context if diag else None) or ""
        raise DropError(f"{drop.path} cannot be read as CSV: {detail} ({where.strip()})") from None
    return name


def cast_staged(engine: Engine, spec: TableSpec, raw: str, typed: str) -> None:
    """Copy the raw TEXT staging table into a table of the spec's SQL types (published, it
    becomes the month's record, never written again)."""
    casts = ", ".join(
        f"{ident(c.name)}::{PG_TYPES[c.sql_type]} AS {ident(c.name)}" for c in spec.columns
    )
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE {ident(STAGING_SCHEMA, typed)} {NO_AUTOVACUUM} AS "
                f"SELECT {casts} FROM {ident(STAGING_SCHEMA, raw)}"
            )
        )
        conn.execute(sa.text(f"ANALYZE {ident(STAGING_SCHEMA, typed)}"))


def drop_staging_table(engine: Engine, name: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {ident(STAGING_SCHEMA, name)}"))


@dataclass(frozen=True)
class DropState:
    """A drop folder as the sensor sees it: which of the six files it has, and their stamps."""

    folder: Path
    missing: tuple[str, ...]
    stamps: dict[str, list[int]]
    """file name -> [size, mtime_ns] of every drop file present."""

    @classmethod
    def read(cls, folder: Path) -> DropState:
        stamps, missing = {}, []
        for name in DROP_FILES:
            try:
                info = (folder / name).stat()
            except FileNotFoundError:
                missing.append(name)
                continue
            stamps[name] = [info.st_size, info.st_mtime_ns]
        return cls(folder, tuple(missing), stamps)

    @property
    def complete(self) -> bool:
        return not self.missing

    def fingerprint(self) -> str:
        text = json.dumps(self.stamps, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def stamp_texts(self) -> dict[str, str]:
        """file name -> its stamp as the ingestion step records it (`file stamp` metadata)."""
        return {name: stamp_text(stamp) for name, stamp in self.stamps.items()}


def stamp_text(stamp) -> str:
    """A file's (size, mtime_ns) as text: "<bytes> bytes, mtime_ns <n>"."""
    size, mtime_ns = stamp
    return f"{size} bytes, mtime_ns {mtime_ns}"
