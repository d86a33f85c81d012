"""Validation of a staged drop with Great Expectations 1.x, grouped into named checks.

Expectations are derived from the table specs and grouped into a few checks with stable names.
The blocking ones run before anything is published; the first blocking check that fails stops
the partition (its later checks would only repeat the failure in other words).

| check              | blocking | what                                                          |
|--------------------|----------|---------------------------------------------------------------|
| file_format        | yes      | exact column set, no duplicate column, rows in file = staged  |
| values_parse       | yes      | every value parses as its SQL type                            |
| user_ids           | yes      | user_id present, unique, well-formed, in the month's users   |
| allowed_values     | yes      | NOT NULL columns, allowed values, ranges, plan_stream_* rule |
| all_users_present  | no       | users of the month's users file missing from this file       |
| row_count_stable   | no       | row count within 20% of the previous month's                 |
| label_rate_stable  | no       | labels: churn rate not 0% or 100%, within 15 points of before |
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import URL

from streamflow_assets.adapters.gx import UnexpectedRowCount, context, gx, gxe
from streamflow_assets.checks import LABEL_RATE_JUMP, LABEL_RATE_STABLE, ROW_COUNT_TOLERANCE, Check
from streamflow_assets.sql import ident, literal
from streamflow_assets.table_specs import TableSpec

SAMPLE_SIZE = 5

PARSE_PATTERNS = {
    "INTEGER": r"^-?[0-9]{1,9}$",
    "NUMERIC": r"^-?[0-9]+(\.[0-9]+)?$",
}
"""How numbers are written in a drop."""
BOOLEAN_SPELLINGS = ["True", "False"]
"""How booleans are written in a drop (an IN test: 10x cheaper than a regex per value)."""


@dataclass
class Outcome:
    """One expectation's result, in the words a person fixing the drop needs."""

    expectation: str
    column: str | None
    success: bool
    unexpected_count: int = 0
    samples: list[str] = field(default_factory=list)
    observed: str = ""

    def line(self) -> str:
        where = f"{self.column}: " if self.column else ""
        text = f"{where}{self.expectation}"
        if self.unexpected_count:
            text += f" — {self.unexpected_count:,} unexpected"
        if self.observed:
            text += f" ({self.observed})"
        if self.samples:
            text += f", e.g. {'; '.join(self.samples)}"
        return text


@dataclass
class CheckReport:
    check: Check
    outcomes: list[Outcome]
    numbers: dict[str, object] = field(default_factory=dict)
    """What the check measured, shown with its result whether it passed or not."""
    note: str = ""
    """Said with the result instead of the check's description, e.g. why it was not evaluated."""
    evaluated: bool = True
    """False for a check that did not run because an earlier one stopped the file."""

    @property
    def passed(self) -> bool:
        return self.evaluated and all(o.success for o in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success]

    def failure_table(self) -> str | None:
        """The failed expectations as a markdown table, or None when all passed."""
        if not self.failures:
            return None
        rows = "\n".join(
            f"| `{o.column or ''}` | {o.expectation} | {o.unexpected_count:,} | "
            f"{'; '.join(o.samples) or o.observed} |"
            for o in self.failures
        )
        return "| column | expectation | unexpected | examples |\n|---|---|---|---|\n" + rows


def _user_id_samples(result: dict, column: str | None) -> list[str]:
    rows = result.get("partial_unexpected_index_list") or []
    samples = []
    shows_value = column is not None and column != "user_id"
    for row in rows[:SAMPLE_SIZE]:
        value = f": {row.get(column)!r}" if shows_value else ""
        samples.append(f"user_id {row.get('user_id')}{value}")
    if not samples:
        samples = [repr(v) for v in (result.get("partial_unexpected_list") or [])[:SAMPLE_SIZE]]
    return samples


def _row_samples(result: dict) -> list[str]:
    rows = (result.get("details") or {}).get("unexpected_rows") or []
    return [", ".join(f"{k} {v}" for k, v in row.items()) for row in rows[:SAMPLE_SIZE]]


def _exception_message(gx_result) -> str | None:
    info = gx_result.exception_info or {}
    # One dict for the expectation, or one per metric that failed to compute.
    for item in [info, *(v for v in info.values() if isinstance(v, dict))]:
        if item.get("raised_exception"):
            return str(item.get("exception_message") or "unknown error").splitlines()[0]
    return None


def _outcome(gx_result) -> Outcome:
    config = gx_result.expectation_config
    result = gx_result.result or {}
    column = config.kwargs.get("column")
    name = config.description or config.type.removeprefix("expect_").replace("_", " ")
    if error := _exception_message(gx_result):
        return Outcome(name, column, False, observed=f"could not be evaluated: {error}")
    if config.type == "unexpected_rows_expectation":
        count = int(result.get("observed_value") or 0)
        return Outcome(name, column, gx_result.success, count, _row_samples(result))
    if "unexpected_count" in result:
        return Outcome(
            name,
            column,
            gx_result.success,
            int(result.get("unexpected_count") or 0),
            _user_id_samples(result, column),
        )
    observed = result.get("observed_value")
    return Outcome(name, column, gx_result.success, observed=f"found {observed}")


class Validator:
    """Runs expectation suites against tables of one database or against a data frame."""

    def __init__(self, url: URL):
        self._context = context()
        self._url = url
        self._sql: dict[str, object] = {}
        self._batches: dict[tuple[str, str], object] = {}

    def _sql_source(self, schema: str):
        """A data source per schema: GX 1.x wants the schema in the connection, not the asset."""
        if schema not in self._sql:
            url = self._url.set(query={**self._url.query, "options": f"-csearch_path={schema}"})
            # add_sql, not add_postgres: the latter rejects Unix-socket URLs (the embedded server),
            # so GX's hint to prefer it is silenced here.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "You are using a generic SQLDatasource")
                self._sql[schema] = self._context.data_sources.add_sql(
                    f"streamflow {schema}",
                    connection_string=url.render_as_string(hide_password=False),
                    # No idle connections left behind once a validation is done.
                    kwargs={"poolclass": sa.pool.NullPool},
                )
        return self._sql[schema]

    def table(self, schema: str, name: str, suites: dict[Check, list]) -> list[CheckReport]:
        """Validate a table against several checks' expectations in one run."""
        if (schema, name) not in self._batches:
            asset = self._sql_source(schema).add_table_asset(name, table_name=name)
            self._batches[schema, name] = asset.add_batch_definition_whole_table("whole table")
        expectations = []
        for check, check_expectations in suites.items():
            for expectation in check_expectations:
                expectation.meta = {"check": check.name}
                expectations.append(expectation)
        outcomes: dict[str, list[Outcome]] = {check.name: [] for check in suites}
        for result in self._run(self._batches[schema, name], expectations):
            outcomes[result.expectation_config.meta["check"]].append(_outcome(result))
        return [CheckReport(check, outcomes[check.name]) for check in suites]

    def frame(self, name: str, frame: pd.DataFrame, expectations: Sequence) -> list[Outcome]:
        source = self._context.data_sources.add_or_update_pandas(f"{name} frame")
        asset = source.add_dataframe_asset(name)
        batch = asset.add_batch_definition_whole_dataframe("whole frame").get_batch(
            batch_parameters={"dataframe": frame}
        )
        suite = gx.ExpectationSuite(name=f"{name} suite", expectations=list(expectations))
        return [_outcome(r) for r in batch.validate(suite, result_format="SUMMARY").results]

    def _run(self, batch_definition, expectations: Sequence) -> list:
        """Validate cheaply, then ask again for details of what failed only.

        With BOOLEAN_ONLY, GX bundles the suite's aggregates into a few table scans; collecting
        unexpected counts and offending user_ids costs several queries per expectation, which
        is only worth paying for an expectation that failed.
        """
        batch = batch_definition.get_batch()
        name = f"{batch_definition.data_asset.name} suite"
        quick = batch.validate(
            gx.ExpectationSuite(name=name, expectations=list(expectations)),
            result_format="BOOLEAN_ONLY",
        ).results
        failed = [r.expectation_config.to_domain_obj() for r in quick if not r.success]
        if not failed:
            return quick
        failed = [e.with_rows() if isinstance(e, UnexpectedRowCount) else e for e in failed]
        # Custom-query expectations list their rows only in COMPLETE; the others would list
        # every unexpected value there, so they report a sample (SUMMARY).
        queries = [e for e in failed if isinstance(e, gxe.UnexpectedRowsExpectation)]
        columns = [e for e in failed if not isinstance(e, gxe.UnexpectedRowsExpectation)]
        details = []
        for expectations, result_format in ((queries, "COMPLETE"), (columns, "SUMMARY")):
            if expectations:
                details += batch.validate(
                    gx.ExpectationSuite(name=f"{name} {result_format}", expectations=expectations),
                    result_format={
                        "result_format": result_format,
                        "unexpected_index_column_names": ["user_id"],
                        "partial_unexpected_count": SAMPLE_SIZE,
                    },
                ).results
        return [r for r in quick if r.success] + details


# ---- expectations derived from the table specs -------------------------------------------------


def header_expectations(spec: TableSpec, header: Sequence[str]) -> list:
    present_optional = [c.name for c in spec.columns if c.optional_in_file and c.name in header]
    expected = [*spec.required_file_columns, *present_optional]
    return [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=expected,
            exact_match=True,
            description=f"columns are exactly {', '.join(spec.column_names)} "
            "(add_on_* may be absent)",
        ),
        gxe.ExpectTableColumnCountToEqual(
            value=len(expected), description="no column appears twice"
        ),
    ]


def staged_count_expectations(data_rows: int) -> list:
    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=1, description="the file has data rows"),
        gxe.ExpectTableRowCountToEqual(
            value=data_rows, description=f"rows staged equal the file's {data_rows:,} data lines"
        ),
    ]


def parse_expectations(spec: TableSpec) -> list:
    expectations = []
    for col in spec.columns:
        if col.sql_type in PARSE_PATTERNS:
            expectations.append(
                gxe.ExpectColumnValuesToMatchRegex(
                    column=col.name,
                    regex=PARSE_PATTERNS[col.sql_type],
                    description=f"values parse as {col.sql_type}",
                )
            )
        elif col.sql_type == "BOOLEAN":
            expectations.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=col.name,
                    value_set=BOOLEAN_SPELLINGS,
                    description="values parse as BOOLEAN (True or False)",
                )
            )
        elif col.sql_type == "DATE":
            # A real calendar day written YYYY-MM-DD: anti-join on every day of 1900..2199.
            expectations.append(
                UnexpectedRowCount(
                    unexpected_rows_query=f"""
                        SELECT user_id, {ident(col.name)} FROM {{batch}}
                        WHERE {ident(col.name)} IS NOT NULL AND {ident(col.name)} NOT IN (
                            SELECT to_char(d, 'YYYY-MM-DD')
                            FROM generate_series(date '1900-01-01', date '2199-12-31',
                                                 interval '1 day') AS d)""",
                    description=f"{col.name}: values are dates written YYYY-MM-DD",
                )
            )
    return expectations


def user_id_expectations(spec: TableSpec, users_month_table: tuple[str, str] | None) -> list:
    user_id = spec.column("user_id")
    expectations = [
        gxe.ExpectColumnValuesToNotBeNull(column="user_id", description="user_id is present"),
        # A hash aggregate: GX's own uniqueness expectation sorts the table with a window.
        UnexpectedRowCount(
            unexpected_rows_query="""
                SELECT user_id, count(*) AS rows FROM {batch}
                WHERE user_id IS NOT NULL GROUP BY user_id HAVING count(*) > 1""",
            description="user_id: each user_id appears once",
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="user_id",
            regex=user_id.pattern,
            description="user_id looks like 7590-VHVEG",
        ),
    ]
    if users_month_table is not None:
        users = ident(*users_month_table)
        expectations.append(
            UnexpectedRowCount(
                unexpected_rows_query=f"""
                    WITH b AS (SELECT user_id FROM {{batch}})
                    SELECT b.user_id FROM b
                    WHERE NOT EXISTS (SELECT 1 FROM {users} AS u WHERE u.user_id = b.user_id)""",
                description="user_id: every user_id is in the month's users file",
            )
        )
    return expectations


def value_expectations(spec: TableSpec, as_of: date | None = None) -> list:
    expectations = []
    for col in spec.columns:
        if col.name == "user_id":
            continue
        c = ident(col.name)
        if not col.nullable:
            expectations.append(
                gxe.ExpectColumnValuesToNotBeNull(column=col.name, description="has a value")
            )
        if col.allowed:
            expectations.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=col.name,
                    value_set=list(col.allowed),
                    description=f"is one of {', '.join(col.allowed)}",
                )
            )
        if col.min_value is not None or col.max_value is not None:
            low = "" if col.min_value is None else f"{col.min_value:g} ≤ "
            high = "" if col.max_value is None else f" ≤ {col.max_value:g}"
            expectations.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=col.name,
                    min_value=col.min_value,
                    max_value=col.max_value,
                    description=f"{low}value{high}",
                )
            )
        if col.not_after_as_of and as_of is not None:
            expectations.append(
                _rows_where(
                    col.name,
                    f"{c} > {literal(as_of)}",
                    f"not after the month's as_of ({as_of})",
                )
            )
        if col.at_most_per:
            other, amount = col.at_most_per
            expectations.append(
                _rows_where(
                    col.name,
                    f"{c} > ({ident(other)} + 1) * {literal(amount)}",
                    f"at most ({other} + 1) x {amount:g}",
                    other,
                )
            )
        if col.null_exactly_when:
            other, value = col.null_exactly_when
            expectations.append(
                _rows_where(
                    col.name,
                    f"({c} IS NULL) <> ({ident(other)} IS NOT DISTINCT FROM {literal(value)})",
                    f"NULL exactly when {other} is {value}",
                    other,
                )
            )
    return expectations


def _rows_where(column: str, where: str, rule: str, *shown: str) -> UnexpectedRowCount:
    """A rule on a column's rows: those matching `where` break it (shown with `shown`'s values)."""
    columns = ", ".join(ident(name) for name in (column, *shown))
    return UnexpectedRowCount(
        unexpected_rows_query=f"SELECT user_id, {columns} FROM {{batch}} WHERE {where}",
        description=f"{column}: {rule}",
    )


def coverage_expectations(users_month_table: tuple[str, str]) -> list:
    users = ident(*users_month_table)
    return [
        UnexpectedRowCount(
            unexpected_rows_query=f"""
                WITH b AS (SELECT user_id FROM {{batch}})
                SELECT u.user_id FROM {users} AS u
                WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.user_id = u.user_id)""",
            description="users of the month's users file missing from this file",
        )
    ]


def row_count_expectations(previous_rows: int | None) -> list:
    if not previous_rows:
        return []
    low = int(previous_rows * (1 - ROW_COUNT_TOLERANCE))
    high = int(previous_rows * (1 + ROW_COUNT_TOLERANCE))
    return [
        gxe.ExpectTableRowCountToBeBetween(
            min_value=low,
            max_value=high,
            description=f"row count within {ROW_COUNT_TOLERANCE:.0%} of the previous month's "
            f"{previous_rows:,}",
        )
    ]


def label_rate_report(rate: float | None, previous: float | None) -> CheckReport:
    """The churn rate of a labels month against the previous month's."""
    if rate is None:
        return CheckReport(LABEL_RATE_STABLE, [Outcome("the month has no labels", None, False)])
    outcomes = [
        Outcome(
            "churn rate is neither 0% nor 100%",
            "churn_label",
            0 < rate < 1,
            observed=f"rate {rate:.1%}",
        )
    ]
    if previous is not None:
        outcomes.append(
            Outcome(
                f"churn rate within {LABEL_RATE_JUMP:.0%} points of the previous month's",
                "churn_label",
                abs(rate - previous) <= LABEL_RATE_JUMP,
                observed=f"rate {rate:.1%}, previous month {previous:.1%}",
            )
        )
    return CheckReport(
        LABEL_RATE_STABLE,
        outcomes,
        {
            "churn rate": round(rate, 4),
            "previous month's rate": round(previous, 4)
            if previous is not None
            else "no previous month",
            "change (points)": round(100 * (rate - previous), 1)
            if previous is not None
            else "no previous month",
        },
    )
