"""The six live-table assets, built by one factory over the table specs.

A partition is one month's drop of one table, written-audited-published:
stage the CSV with COPY → validate the staged rows (asset checks) → in one transaction, keep the
validated rows as the month's record and upsert them into the live table.
"""

import time
from collections.abc import Iterator

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from streamflow_assets.ingestion.drops import (
    DropError,
    drop_staging_table,
    open_drop_file,
    stage_raw,
    staging_table_name,
)
from streamflow_assets.ingestion.publish import cast_staged, drop_stale_staging, publish
from streamflow_assets.ingestion.validation import (
    ALL_USERS_PRESENT,
    ALLOWED_VALUES,
    FILE_FORMAT,
    ROW_COUNT_STABLE,
    USER_IDS,
    VALUES_PARSE,
    Check,
    CheckReport,
    Outcome,
    Validator,
    checks_for,
    coverage_expectations,
    header_expectations,
    parse_expectations,
    row_count_expectations,
    staged_count_expectations,
    user_id_expectations,
    value_expectations,
)
from streamflow_assets.partitions import as_of, month_of, monthly_partitions, partition_key
from streamflow_assets.resources import StreamflowDatabase
from streamflow_assets.settings import Settings, add_months
from streamflow_assets.table_specs import TABLES, USERS, TableSpec
from streamflow_assets.warehouse import (
    DROPS_SCHEMA,
    STAGING_SCHEMA,
    ensure_tables,
    ident,
    live_table_ddl,
    month_table,
    partition_lock,
    table_exists,
)

PREVIEW_ROWS = 5


class _Audit:
    """Turns validation reports into check results; a blocking failure stops the partition."""

    def __init__(self, spec: TableSpec, drop_path: str):
        self.asset_key = dg.AssetKey(spec.name)
        self.drop_path = drop_path

    def results(self, reports: list[CheckReport]) -> Iterator[dg.AssetCheckResult]:
        """Yield the reports' check results, then raise if a blocking one failed."""
        for report in reports:
            yield report.to_result(self.asset_key)
        failed = [r for r in reports if r.check.blocking and not r.passed]
        if failed:
            lines = [f"  - [{r.check.name}] {o.line()}" for r in failed for o in r.failures]
            raise dg.Failure(
                description=f"{self.drop_path} failed validation; nothing was published:\n"
                + "\n".join(lines),
                metadata={
                    "file": self.drop_path,
                    "failed checks": ", ".join(r.check.name for r in failed),
                },
            )

    def stop(self, check: Check, outcomes: list[Outcome]) -> Iterator[dg.AssetCheckResult]:
        yield from self.results([CheckReport(check, outcomes)])
        raise AssertionError("a failed blocking check always raises")


def _previous_rows(engine: Engine, spec: TableSpec, partition: str) -> int | None:
    previous = partition_key(add_months(month_of(partition), -1))
    with engine.connect() as conn:
        if not table_exists(conn, DROPS_SCHEMA, month_table(spec, previous)):
            return None
        table = ident(DROPS_SCHEMA, month_table(spec, previous))
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def _users_month_table(engine: Engine, spec: TableSpec, partition: str) -> tuple[str, str] | None:
    if spec.name == USERS.name:
        return None
    name = month_table(USERS, partition)
    with engine.connect() as conn:
        if not table_exists(conn, DROPS_SCHEMA, name):
            raise dg.Failure(
                f"{spec.name} {partition} checks its user_ids against the month's users file, "
                f"which is not loaded: materialize users for {partition} first"
            )
    return (DROPS_SCHEMA, name)


def _preview(engine: Engine, table: str) -> dg.MetadataValue:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY user_id LIMIT {PREVIEW_ROWS}"))
        columns = list(rows.keys())
        lines = [" | ".join(str(v) for v in row) for row in rows]
    header = " | ".join(columns)
    rule = " | ".join("---" for _ in columns)
    return dg.MetadataValue.md("\n".join(f"| {line} |" for line in [header, rule, *lines]))


def _header_frame(header: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame(columns=list(header))


def ingest_month(
    context: dg.AssetExecutionContext, settings: Settings, engine: Engine, spec: TableSpec
) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
    """Write-audit-publish one month of one table (the caller holds the partition's lock)."""
    started = time.perf_counter()
    partition = context.partition_key
    try:
        drop = open_drop_file(settings, spec, partition)
    except DropError as exc:
        yield from _Audit(spec, spec.file_name).stop(FILE_FORMAT, [Outcome(str(exc), None, False)])
    audit = _Audit(spec, str(drop.path))
    validator = Validator(engine.url)
    users = _users_month_table(engine, spec, partition)

    header = validator.frame(
        spec.name, _header_frame(drop.header), header_expectations(spec, drop.header)
    )
    if not all(o.success for o in header):
        yield from audit.stop(FILE_FORMAT, header)

    raw = typed = None
    try:
        try:
            raw = stage_raw(engine, drop)
        except DropError as exc:
            yield from audit.stop(FILE_FORMAT, [*header, Outcome(str(exc), None, False)])
        staged = {
            FILE_FORMAT: staged_count_expectations(drop.data_rows),
            VALUES_PARSE: parse_expectations(spec),
        }
        file_format, parse = validator.table(STAGING_SCHEMA, raw, staged)
        file_format.outcomes[:0] = header
        yield from audit.results([file_format, parse])

        typed = staging_table_name(spec, partition, "typed")
        cast_staged(engine, spec, raw, typed)
        suites = {
            USER_IDS: user_id_expectations(spec, users),
            ALLOWED_VALUES: value_expectations(spec),
            ROW_COUNT_STABLE: row_count_expectations(_previous_rows(engine, spec, partition)),
        }
        if users is not None:
            suites[ALL_USERS_PRESENT] = coverage_expectations(users)
        yield from audit.results(validator.table(STAGING_SCHEMA, typed, suites))

        target = month_table(spec, partition)
        with engine.begin() as conn:
            counts = publish(conn, spec, typed, target, as_of(partition))
            live_rows = conn.execute(
                sa.text(f"SELECT count(*) FROM {ident(spec.name)}")
            ).scalar_one()
        typed = None  # it is the month table now
    finally:
        for name in (raw, typed):
            if name:
                drop_staging_table(engine, name)

    yield dg.MaterializeResult(
        metadata={
            "as_of": str(as_of(partition)),
            "file": drop.path.as_posix(),
            "rows staged": drop.data_rows,
            "rows inserted": counts["inserted"],
            "rows updated": counts["updated"],
            "rows skipped as older": counts["skipped_as_older"],
            "rows in live table": live_rows,
            "month table": f"{DROPS_SCHEMA}.{target}",
            "seconds": round(time.perf_counter() - started, 2),
            "preview": _preview(engine, ident(DROPS_SCHEMA, target)),
        }
    )


def build_ingestion_asset(spec: TableSpec) -> dg.AssetsDefinition:
    deps = [] if spec.name == USERS.name else [dg.AssetKey(USERS.name)]
    check_specs = [
        dg.AssetCheckSpec(
            check.name,
            asset=spec.name,
            description=check.description,
            blocking=check.blocking,
            partitions_def=monthly_partitions,
        )
        for check in checks_for(spec)
    ]

    @dg.asset(
        name=spec.name,
        group_name="ingestion",
        partitions_def=monthly_partitions,
        deps=deps,
        check_specs=check_specs,
        kinds={"postgres", "csv"},
        description=f"Live table `{spec.name}`: {spec.description} Each month's "
        f"`{spec.file_name}` is staged, validated and upserted; a user keeps the values of the "
        "newest month that listed them.",
    )
    def _asset(context: dg.AssetExecutionContext, database: StreamflowDatabase):
        settings = database.settings()
        engine = database.engine()
        with partition_lock(engine, spec.name, context.partition_key):
            ensure_tables(engine, live_table_ddl(spec))
            drop_stale_staging(engine, spec, context.partition_key)
            yield from ingest_month(context, settings, engine, spec)

    return _asset


ingestion_assets = [build_ingestion_asset(spec) for spec in TABLES]
