"""What every group's wiring shares: partitioned check specs, check results and metadata from
the domain's plain values, and domain errors as Dagster failures."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import dagster as dg

from streamflow_assets.checks import Check
from streamflow_assets.defs.partitions import monthly_partitions
from streamflow_assets.ingestion.drops import DropError
from streamflow_assets.model_registry import RegistryError
from streamflow_assets.report import (
    CheckOutcome,
    Markdown,
    MissingInputError,
    OnlineStoreUnavailableError,
    StepRefused,
)
from streamflow_assets.warehouse import PG_TYPES


def check_spec(check: Check, asset: str) -> dg.AssetCheckSpec:
    """A check of the catalog, recorded per monthly partition: the UI shows its result for each
    month, and its severity is the catalog's."""
    # Per-partition check results are a preview feature of dagster 1.13 (pinned; see README):
    # its warning is in streamflow_assets/noise.py.
    return dg.AssetCheckSpec(
        check.name,
        asset=asset,
        description=check.description,
        blocking=check.blocking,
        partitions_def=monthly_partitions,
    )


def metadata(values: Mapping[str, object]) -> dict[str, dg.RawMetadataValue]:
    """The domain's metadata as Dagster shows it: markdown, paths, JSON, plain values."""
    out: dict[str, dg.RawMetadataValue] = {}
    for key, value in values.items():
        if isinstance(value, Markdown):
            out[key] = dg.MetadataValue.md(str(value))
        elif isinstance(value, Path):
            out[key] = dg.MetadataValue.path(str(value))
        elif isinstance(value, dict):
            out[key] = dg.MetadataValue.json(value)
        elif value is None:
            out[key] = dg.MetadataValue.null()
        else:
            out[key] = value
    return out


def check_result(outcome: CheckOutcome, asset: str | None = None) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset or outcome.asset,
        check_name=outcome.name,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR if outcome.blocking else dg.AssetCheckSeverity.WARN,
        description=outcome.description,
        metadata=metadata(outcome.metadata),
    )


@contextlib.contextmanager
def as_failures() -> Iterator[None]:
    """A domain error a person can act on ends the step as a Dagster failure with its message
    (no traceback of ours in the UI)."""
    try:
        yield
    except StepRefused as exc:
        raise dg.Failure(description=str(exc), metadata=metadata(exc.metadata)) from None
    except (
        MissingInputError,
        DropError,
        RegistryError,
        LookupError,
        OnlineStoreUnavailableError,
    ) as exc:
        raise dg.Failure(description=str(exc)) from None


def column_schema(columns, *extra: tuple[str, str, str]) -> dg.TableSchema:
    """The columns of a table as Dagster shows them (the asset's *Columns* in the UI)."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c.name,
                PG_TYPES[c.sql_type],
                description=c.description or None,
                constraints=dg.TableColumnConstraints(nullable=c.nullable),
            )
            for c in columns
        ]
        + [
            dg.TableColumn(name, sql_type, description, dg.TableColumnConstraints(nullable=False))
            for name, sql_type, description in extra
        ]
    )
