"""The one monthly partitions definition, and how a partition maps to its drop folder and as_of."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import dagster as dg

from streamflow_assets.settings import DropFolderError, Settings, add_months, month_end

_FOLDER_RE = re.compile(r"^month_(\d{3})$")


def _first_month() -> date:
    return Settings.from_env().first_month


monthly_partitions = dg.MonthlyPartitionsDefinition(
    start_date=_first_month().strftime("%Y-%m"), fmt="%Y-%m"
)
"""Calendar months keyed YYYY-MM, from STREAMFLOW_FIRST_MONTH to the last completed month."""


def month_of(partition_key: str) -> date:
    """First day of a partition's month."""
    year, month = partition_key.split("-")
    return date(int(year), int(month), 1)


def as_of(partition_key: str) -> date:
    """A partition's as_of: the last day of its month."""
    return month_end(month_of(partition_key))


def partition_key(month: date) -> str:
    return month.strftime("%Y-%m")


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
    last = monthly_partitions.get_last_partition_key()
    found = {}
    for folder in sorted(p for p in settings.drops_dir.iterdir() if p.is_dir()):
        key = partition_of_folder(folder.name, settings.first_month)
        if key is None:
            raise DropFolderError(
                f"{folder} is not a month folder: drop folders are named month_000, month_001, ..."
            )
        if last is None or key > last:
            raise DropFolderError(
                f"{folder} maps to {key}, which has no partition yet: partitions run from "
                f"{settings.first_month:%Y-%m} (STREAMFLOW_FIRST_MONTH) to the last completed "
                f"month, {last}"
            )
        found[key] = folder
    return found
