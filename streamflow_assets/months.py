"""Months as the pipeline counts them: a partition key `YYYY-MM`, its as_of, its drop folder.

The Dagster partitions definition (streamflow_assets/defs/partitions.py) has the same keys: calendar
months from STREAMFLOW_FIRST_MONTH to the last completed month.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from datetime import time as clock
from pathlib import Path

from streamflow_assets.settings import DropFolderError, Settings, add_months, month_end

_FOLDER_RE = re.compile(r"^month_(\d{3})$")


def month_of(partition_key: str) -> date:
    """First day of a partition's month."""
    year, month = partition_key.split("-")
    return date(int(year), int(month), 1)


def as_of(partition_key: str) -> date:
    """A partition's as_of: the last day of its month."""
    return month_end(month_of(partition_key))


def partition_key(month: date) -> str:
    return month.strftime("%Y-%m")


def previous_month(partition: str) -> str:
    return partition_key(add_months(month_of(partition), -1))


def time_window(partition: str) -> tuple[datetime, datetime]:
    """[first instant of the month, first instant of the next), UTC: the partition's window."""
    start = month_of(partition)
    end = add_months(start, 1)
    return (
        datetime.combine(start, clock(0), tzinfo=UTC),
        datetime.combine(end, clock(0), tzinfo=UTC),
    )


def event_timestamp(partition: str) -> datetime:
    """The timestamptz Feast sees for a month's snapshot rows: as_of at midnight UTC."""
    return datetime.combine(as_of(partition), clock(0), tzinfo=UTC)


def last_complete_month(today: date | None = None) -> str:
    """The newest month that has ended: the last partition there is."""
    today = today or datetime.now(UTC).date()
    return partition_key(add_months(today.replace(day=1), -1))


def months_between(first: date, last: str) -> list[str]:
    """Every partition key from the first month to `last`, oldest first."""
    keys, month = [], first
    while partition_key(month) <= last:
        keys.append(partition_key(month))
        month = add_months(month, 1)
    return keys


def folder_name(partition: str, first_month: date) -> str:
    """The drop folder of a partition: month_NNN, NNN months after the first month."""
    month = month_of(partition)
    index = (month.year - first_month.year) * 12 + month.month - first_month.month
    if index < 0:
        raise ValueError(f"partition {partition} is before the first month {first_month:%Y-%m}")
    return f"month_{index:03d}"


def drop_folder(settings: Settings, partition: str) -> Path:
    return settings.drops_dir / folder_name(partition, settings.first_month)


def partition_of_folder(name: str, first_month: date) -> str | None:
    """The partition key a drop folder name stands for, or None if it is no month_NNN name."""
    match = _FOLDER_RE.match(name)
    if not match:
        return None
    return partition_key(add_months(first_month, int(match.group(1))))


def partitions_in_drops(settings: Settings) -> dict[str, Path]:
    """The partition key of every month folder in the drops folder, oldest first."""
    if not settings.drops_dir.is_dir():
        return {}
    last = last_complete_month()
    found = {}
    for folder in sorted(p for p in settings.drops_dir.iterdir() if p.is_dir()):
        key = partition_of_folder(folder.name, settings.first_month)
        if key is None:
            raise DropFolderError(
                f"{folder} is not a month folder: drop folders are named month_000, month_001, ..."
            )
        if key > last:
            raise DropFolderError(
                f"{folder} maps to {key}, which has no partition yet: partitions run from "
                f"{settings.first_month:%Y-%m} (STREAMFLOW_FIRST_MONTH) to the last completed "
                f"month, {last}"
            )
        found[key] = folder
    return found
