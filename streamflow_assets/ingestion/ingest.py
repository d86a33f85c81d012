"""A month's drop, write-audit-publish: stage and validate every selected file, then publish all.

Every selected file is staged with COPY and validated; only when no blocking check failed are they
all published in one transaction — each kept as the month's record (`drops.<table>_<YYYY_MM>`)
and merged into its live table (see publish.py). A bad file therefore changes no table at all,
and the live tables never mix months because one file of a drop was rejected.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from streamflow_assets.checks import (
    ALL_USERS_PRESENT,
    ALLOWED_VALUES,
    FILE_FORMAT,
    ROW_COUNT_STABLE,
    USER_IDS,
    VALUES_PARSE,
    drop_checks,
)
from streamflow_assets.failpoints import failpoint
from streamflow_assets.ingestion.drops import (
    DropError,
    DropFile,
    cast_staged,
    drop_staging_table,
    open_drop_file,
    stage_raw,
    stamp_text,
)
from streamflow_assets.ingestion.publish import publish_drop
from streamflow_assets.ingestion.validation import (
    CheckReport,
    Outcome,
    Validator,
    coverage_expectations,
    header_expectations,
    label_rate_report,
    parse_expectations,
    row_count_expectations,
    staged_count_expectations,
    user_id_expectations,
    value_expectations,
)
from streamflow_assets.months import as_of, previous_month
from streamflow_assets.report import MissingInputError, StepRefused
from streamflow_assets.settings import Settings
from streamflow_assets.sql import first_rows, ident, table_exists
from streamflow_assets.table_specs import USERS, TableSpec
from streamflow_assets.warehouse import (
    DROPS_SCHEMA,
    STAGING_SCHEMA,
    drop_abandoned_staging,
    drop_stale_staging,
    ensure_tables,
    live_table_ddl,
    month_table,
    staging_name,
)

VALIDATION_THREADS = 2
"""Files validated at once: the work runs in PostgreSQL, one backend per file."""


@dataclass
class StagedFile:
    """One file of the drop after validation: its check reports and its staging tables."""

    spec: TableSpec
    drop: DropFile | None = None
    reports: list[CheckReport] = field(default_factory=list)
    raw: str | None = None
    typed: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    """Time spent per phase, shown with the materialization."""

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = round(time.perf_counter() - started, 2)

    @property
    def blocked(self) -> bool:
        return any(r.check.blocking and not r.passed for r in self.reports)

    @property
    def label(self) -> str:
        return str(self.drop.path) if self.drop else self.spec.file_name


def prepare(engine: Engine, specs: Sequence[TableSpec], partition: str) -> None:
    """The live tables exist; staging left by killed runs of this month is gone (the caller
    holds the month's lock), and so is that of any other month no live run is working on."""
    ensure_tables(engine, *(live_table_ddl(spec) for spec in specs))
    for spec in specs:
        drop_stale_staging(engine, spec.name, partition)
    # And what dead runs of other months left, when no run of those months is alive.
    drop_abandoned_staging(engine)


def _previous_rows(engine: Engine, spec: TableSpec, partition: str) -> int | None:
    previous = month_table(spec, previous_month(partition))
    with engine.connect() as conn:
        if not table_exists(conn, DROPS_SCHEMA, previous):
            return None
        table = ident(DROPS_SCHEMA, previous)
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def stage_file(settings: Settings, engine: Engine, spec: TableSpec, partition: str) -> StagedFile:
    """Phase 1: read, stage and parse-check one file, and cast it to its SQL types."""
    staged = StagedFile(spec)
    try:
        staged.drop = open_drop_file(settings, spec, partition)
    except DropError as exc:
        staged.reports.append(CheckReport(FILE_FORMAT, [Outcome(str(exc), None, False)]))
        return staged
    validator = Validator(engine.url)

    header_frame = pd.DataFrame(columns=list(staged.drop.header))
    header = validator.frame(spec.name, header_frame, header_expectations(spec, staged.drop.header))
    if not all(o.success for o in header):
        staged.reports.append(CheckReport(FILE_FORMAT, header))
        return staged
    try:
        with staged.timed("stage (COPY)"):
            staged.raw = stage_raw(engine, staged.drop)
    except DropError as exc:
        staged.reports.append(CheckReport(FILE_FORMAT, [*header, Outcome(str(exc), None, False)]))
        return staged

    suites = {
        FILE_FORMAT: staged_count_expectations(staged.drop.data_rows),
        VALUES_PARSE: parse_expectations(spec),
    }
    with staged.timed("validate raw"):
        staged.reports = validator.table(STAGING_SCHEMA, staged.raw, suites)
    staged.reports[0].outcomes[:0] = header
    if staged.blocked:
        return staged
    staged.typed = staging_name(spec.name, partition, "typed")
    with staged.timed("cast"):
        cast_staged(engine, spec, staged.raw, staged.typed)
    return staged


def check_values(
    engine: Engine, staged: StagedFile, partition: str, users: tuple[str, str] | None
) -> None:
    """Phase 2: the checks on typed values, keys and the month's users."""
    if staged.typed is None:
        return
    spec = staged.spec
    previous_rows = _previous_rows(engine, spec, partition)
    suites = {
        USER_IDS: user_id_expectations(spec, users if spec.name != USERS.name else None),
        ALLOWED_VALUES: value_expectations(spec, as_of(partition)),
        ROW_COUNT_STABLE: row_count_expectations(previous_rows),
    }
    if spec.name != USERS.name and users is not None:
        suites[ALL_USERS_PRESENT] = coverage_expectations(users)
    with staged.timed("validate typed"):
        staged.reports += Validator(engine.url).table(STAGING_SCHEMA, staged.typed, suites)
    _count_numbers(staged, previous_rows)
    if spec.label_column is not None:
        staged.reports.append(_label_rate(engine, spec, staged.typed, partition))


def _count_numbers(staged: StagedFile, previous: int | None) -> None:
    """row_count_stable says what it compared: the rows, the previous month's, the change."""
    report = next(r for r in staged.reports if r.check == ROW_COUNT_STABLE)
    rows = staged.drop.data_rows
    report.numbers = {
        "rows": rows,
        "previous month's rows": previous if previous is not None else "no previous month",
        "change": f"{(rows - previous) / previous:+.1%}" if previous else "no previous month",
    }
    if not previous:
        report.note = "no previous month to compare with: nothing to check yet"


def not_evaluated(staged: StagedFile, users_passed: bool) -> list[CheckReport]:
    """The file's checks that did not run, each saying why: a blocking check that fails stops
    the file, and the checks against the month's users need a users file that passed."""
    done = {report.check for report in staged.reports}
    stopped_by = next(
        (r.check.name for r in staged.reports if r.check.blocking and not r.passed), None
    )
    if stopped_by is not None:
        why = f"not evaluated: {stopped_by} failed first"
    elif not users_passed:
        why = f"not evaluated: {USERS.file_name} did not pass its checks (no month's user list)"
    else:
        why = "not evaluated"
    spec = staged.spec
    return [
        CheckReport(check, [], note=why, evaluated=False)
        for check in drop_checks(spec.name, has_label=spec.label_column is not None)
        if check not in done
    ]


def _label_rate(engine: Engine, spec: TableSpec, typed: str, partition: str) -> CheckReport:
    """The month's churn rate beside the previous month's validated drop's."""
    label = ident(spec.label_column)
    previous = month_table(spec, previous_month(partition))
    with engine.connect() as conn:
        rate = conn.execute(
            sa.text(f"SELECT avg({label}::int)::float8 FROM {ident(STAGING_SCHEMA, typed)}")
        ).scalar()
        before = None
        if table_exists(conn, DROPS_SCHEMA, previous):
            before = conn.execute(
                sa.text(f"SELECT avg({label}::int)::float8 FROM {ident(DROPS_SCHEMA, previous)}")
            ).scalar()
    return label_rate_report(rate, before)


def _users_reference(
    engine: Engine, partition: str, staged_users: StagedFile | None
) -> tuple[str, str] | None:
    """The table holding the month's users that other files are checked against."""
    if staged_users is not None:
        return (STAGING_SCHEMA, staged_users.typed) if staged_users.typed else None
    name = month_table(USERS, partition)
    with engine.connect() as conn:
        if table_exists(conn, DROPS_SCHEMA, name):
            return (DROPS_SCHEMA, name)
    raise MissingInputError(
        f"the files of {partition} are checked against the month's users file, which is not "
        f"loaded: materialize users for {partition} too"
    )


@contextlib.contextmanager
def staged_drop(
    settings: Settings, engine: Engine, specs: Sequence[TableSpec], partition: str
) -> Iterator[list[StagedFile]]:
    """Stage and validate the files of a month; their staging tables are dropped afterwards
    (a published file's typed table has become the month's record by then)."""
    files: list[StagedFile] = []
    try:
        with ThreadPoolExecutor(VALIDATION_THREADS) as pool:
            # Every file's own checks first; the checks against the month's users need users'
            # typed table, and only that, so they come in a second round.
            files = list(pool.map(lambda s: stage_file(settings, engine, s, partition), specs))
            failpoint("ingest.staged")
            staged_users = next((f for f in files if f.spec.name == USERS.name), None)
            users = _users_reference(engine, partition, staged_users)
            list(pool.map(lambda f: check_values(engine, f, partition, users), files))
        for staged in files:
            staged.reports += not_evaluated(staged, users_passed=users is not None)
        failpoint("ingest.validated")
        yield files
    finally:
        for staged in files:
            for name in (staged.raw, staged.typed):
                if name:
                    drop_staging_table(engine, name)


def refuse_if_blocked(files: Sequence[StagedFile]) -> None:
    """Raise StepRefused naming every file, check and sample row that blocked the drop."""
    if not any(f.blocked for f in files):
        return
    lines = []
    for staged in files:
        for report in staged.reports:
            if report.check.blocking and not report.passed:
                lines += [
                    f"  - {staged.label} [{report.check.name}] {o.line()}" for o in report.failures
                ]
    rejected = [f.spec.file_name for f in files if f.blocked]
    raise StepRefused(
        f"the drop failed validation ({', '.join(rejected)}); no table was changed:\n"
        + "\n".join(lines),
        metadata={"rejected files": ", ".join(rejected)},
    )


def publish(
    engine: Engine, files: Sequence[StagedFile], partition: str, started: float
) -> dict[str, dict]:
    """Publish validated files; the metadata of each table, keyed by table name."""
    publish_started = time.perf_counter()
    published = publish_drop(
        engine, [(f.spec, f.typed) for f in files], partition, as_of(partition)
    )
    for staged in files:
        staged.typed = None  # it is the month's record now
        staged.seconds["publish (all files)"] = round(time.perf_counter() - publish_started, 2)
    seconds = round(time.perf_counter() - started, 2)
    metadata = {}
    with engine.connect() as conn:
        for staged in files:
            table = published[staged.spec.name]
            record = month_table(staged.spec, partition)
            metadata[staged.spec.name] = {
                "as_of": str(as_of(partition)),
                "file": staged.drop.path.as_posix(),
                "file stamp": stamp_text(staged.drop.stamp),
                "rows staged": staged.drop.data_rows,
                "rows inserted": table.inserted,
                "rows updated": table.updated,
                "rows unchanged": table.unchanged,
                "rows skipped as older": table.skipped_as_older,
                "rows in live table": table.live_rows,
                "month table": f"{DROPS_SCHEMA}.{record}",
                "seconds (whole drop)": seconds,
                "seconds by phase": dict(staged.seconds),
                "preview": first_rows(conn, ident(DROPS_SCHEMA, record)),
            }
    return metadata
