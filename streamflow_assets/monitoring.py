"""Monthly feature monitoring: did month M's training features move away from month M-1's?

Feast has no feature monitoring (Hopsworks and Tecton ship it): this compares the two months'
training sets per feature with Evidently's data drift tests — a test fit for each column's type
(numeric or categorical) and the number of rows — on a seeded sample of each month, and keeps
Evidently's HTML report under `STREAMFLOW_OUTPUT_DIR/drift/<month>.html`. Drift is an honest
outcome, not bad data: the check warns and the month completes.

Each month's sample is kept beside its report (`<month>.sample.arrow`), so the next month
compares with it instead of reading the whole previous training CSV again.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.feather as feather

from streamflow_assets.adapters.evidently import data_drift
from streamflow_assets.checks import FEATURE_DRIFT
from streamflow_assets.files import atomic_write
from streamflow_assets.report import CheckOutcome, markdown_table

SAMPLE_ROWS = 20_000
"""Rows of each month compared: enough for every test Evidently picks, fast at 10M users."""
NOT_FEATURES = {"user_id", "event_timestamp", "churn_label"}
CSV_BLOCK_BYTES = 8 << 20
"""How much of a training CSV is parsed at a time when its month's sample is read from it."""


def drift_report_path(output_dir: Path, partition: str) -> Path:
    return output_dir / "drift" / f"{partition}.html"


def sample_path(output_dir: Path, partition: str) -> Path:
    return output_dir / "drift" / f"{partition}.sample.arrow"


def keep_sample(table: pa.Table, partition: str, output_dir: Path) -> None:
    """Keep the rows of the month that the next month's drift check compares with."""
    with atomic_write(sample_path(output_dir, partition)) as tmp:
        feather.write_feather(sample(table, partition), tmp, compression="uncompressed")


def kept_sample(output_dir: Path, partition: str, written_after: Path) -> pa.Table | None:
    """The month's kept sample, when it was written after `written_after` (the month's training
    CSV: a sample older than its CSV belongs to an earlier run of the month)."""
    path = sample_path(output_dir, partition)
    try:
        if path.stat().st_mtime_ns < written_after.stat().st_mtime_ns:
            return None
    except FileNotFoundError:
        return None
    return feather.read_table(path)


def read_sample(path: Path, schema: pa.Schema, partition: str) -> pa.Table:
    """The month's sample (the rows `sample` takes) of its training CSV, read a block at a time:
    one pass to count the rows, one to take them, so memory follows the sample, not the month."""
    rows = sum(block.num_rows for block in _csv_blocks(path, schema))
    return take_rows(_csv_blocks(path, schema), sample_rows(rows, partition), schema)


def take_rows(blocks: Iterable[pa.Table], rows: np.ndarray | None, schema: pa.Schema) -> pa.Table:
    """The month's `rows` (indices, sorted; None: all) out of its blocks, in order."""
    first, kept = 0, []
    for block in blocks:
        kept.append(rows_of(block, rows, first))
        first += block.num_rows
    return pa.concat_tables(kept) if kept else schema.empty_table()


def _csv_blocks(path: Path, schema: pa.Schema):
    """A training CSV's record batches as tables, with the column types of a training table."""
    reader = pa_csv.open_csv(
        path,
        read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
        convert_options=pa_csv.ConvertOptions(
            column_types={f.name: f.type for f in schema}, strings_can_be_null=True
        ),
    )
    for batch in reader:
        yield pa.Table.from_batches([batch])


def rows_of(block: pa.Table, rows: np.ndarray | None, first: int) -> pa.Table:
    """The rows of `block` among the month's `rows` (indices in the month, sorted; None: all),
    the block starting at row `first` of the month."""
    if rows is None:
        return block
    lo, hi = np.searchsorted(rows, [first, first + block.num_rows])
    return block.take(pa.array(rows[lo:hi] - first))


def feature_drift(
    current: pa.Table,
    previous: pa.Table | None,
    partition: str,
    previous_partition: str,
    output_dir: Path,
) -> CheckOutcome:
    """The `feature_drift` check of a month against the previous one (None: nothing to compare,
    which passes and says so)."""
    if previous is None or previous.num_rows == 0:
        return FEATURE_DRIFT.outcome(
            True,
            f"no previous month ({previous_partition}) to compare with",
            {"previous month": "no previous month", "drift share": 0.0},
        )
    features = [f for f in current.schema if f.name not in NOT_FEATURES]
    numerical = [
        f.name for f in features if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
    ]
    categorical = [f.name for f in features if f.name not in numerical]
    columns = numerical + categorical
    report = data_drift(
        sample(current.select(columns), partition).to_pandas(),
        sample(previous.select(columns), previous_partition).to_pandas(),
        numerical,
        categorical,
    )
    path = drift_report_path(output_dir, partition)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        tmp.write_text(report.html, encoding="utf-8")
    drifted = sorted((c for c in report.columns if c.drifted), key=lambda c: -c.score)
    return FEATURE_DRIFT.outcome(
        not drifted,
        (
            f"{len(drifted)} of {len(report.columns)} features drifted since {previous_partition}: "
            + ", ".join(c.column for c in drifted)
            if drifted
            else f"no feature drifted since {previous_partition} ({len(report.columns)} compared)"
        ),
        metadata={
            "drift share": round(report.share, 4),
            "drifted features": len(drifted),
            "previous month": previous_partition,
            "rows compared": f"{min(current.num_rows, SAMPLE_ROWS):,} vs "
            f"{min(previous.num_rows, SAMPLE_ROWS):,}",
            "by feature": markdown_table(
                ["feature", "test", "score", "threshold", "drifted"],
                [
                    [c.column, c.method, f"{c.score:.4g}", c.threshold, "yes" if c.drifted else ""]
                    for c in sorted(report.columns, key=lambda c: (not c.drifted, c.column))
                ],
            ),
            "report": path,
        },
    )


def sample(table: pa.Table, partition: str) -> pa.Table:
    """At most SAMPLE_ROWS rows, the same ones for the same month every time (taken in Arrow:
    converting a million rows to pandas costs more than the test). A table of SAMPLE_ROWS rows
    or fewer is its own sample, so a kept sample samples to itself."""
    rows = sample_rows(table.num_rows, partition)
    return table if rows is None else table.take(pa.array(rows))


def sample_rows(num_rows: int, partition: str) -> np.ndarray | None:
    """The rows, in order, that `sample` takes from a table of `num_rows` rows (None: all): what
    a month built a block at a time keeps of each block."""
    if num_rows <= SAMPLE_ROWS:
        return None
    rng = np.random.default_rng(int(partition.replace("-", "")))
    return np.sort(rng.choice(num_rows, SAMPLE_ROWS, replace=False))
