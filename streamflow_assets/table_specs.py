"""The six source tables of a monthly drop, described once.

Everything that needs to know a column — DDL, loading, validation, snapshots, Feast fields and
the sample-drop generator — reads it from here. If a column changes, it changes in this file only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SqlType = Literal["TEXT", "DATE", "BOOLEAN", "INTEGER", "NUMERIC"]

USER_ID_PATTERN = r"^[0-9]{4}-[A-Z]{5}$"
"""A user_id looks like `7590-VHVEG`: four digits, a dash, five capitals."""


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: SqlType
    nullable: bool = False
    allowed: tuple[str, ...] | None = None
    min_value: float | None = None
    max_value: float | None = None
    pattern: str | None = None
    optional_in_file: bool = False
    """The column may be missing from the CSV; it is then NULL for every row."""
    null_exactly_when: tuple[str, str] | None = None
    """(other column, value): this column is NULL exactly when the other column equals value."""
    not_after_as_of: bool = False
    """A date that cannot lie after the month's as_of (nobody signs up after the snapshot)."""
    at_most_per: tuple[str, float] | None = None
    """(other column, amount): the value is at most (other + 1) x amount, e.g. paid to date at
    most one more month than subscribed, at the highest fee."""
    description: str = ""


@dataclass(frozen=True)
class SnapshotSpec:
    """A monthly snapshot of a live table: (user_id, as_of) plus the listed columns."""

    name: str
    columns: tuple[str, ...] | None = None
    """The value columns kept; None keeps every column of the table."""
    feature_view: str | None = None
    """The Feast feature view built over this snapshot, if any (labels have none)."""


@dataclass(frozen=True)
class TableSpec:
    name: str
    description: str
    columns: tuple[Column, ...]
    snapshot: SnapshotSpec | None = None
    primary_key: tuple[str, ...] = ("user_id",)
    label_column: str | None = None
    """The boolean label a churn model learns, if the table holds one."""

    @property
    def file_name(self) -> str:
        return f"{self.name}.csv"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def required_file_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if not c.optional_in_file)

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"table {self.name} has no column {name!r}")

    def snapshot_columns(self) -> tuple[Column, ...]:
        """The snapshot's value columns (without user_id and as_of), in table order."""
        if self.snapshot is None:
            return ()
        if self.snapshot.columns is None:
            return tuple(c for c in self.columns if c.name not in self.primary_key)
        return tuple(self.column(name) for name in self.snapshot.columns)


def _user_id() -> Column:
    return Column(
        "user_id",
        "TEXT",
        pattern=USER_ID_PATTERN,
        description="Subscriber id, unique within a file.",
    )


def _flag(name: str, **kwargs) -> Column:
    return Column(name, "BOOLEAN", **kwargs)


def _count(name: str, min_value: float = 0, **kwargs) -> Column:
    return Column(name, "INTEGER", min_value=min_value, **kwargs)


def _amount(name: str, min_value: float = 0, **kwargs) -> Column:
    return Column(name, "NUMERIC", min_value=min_value, **kwargs)


USERS = TableSpec(
    name="users",
    description="Who each subscriber is: signup date and household.",
    columns=(
        _user_id(),
        Column(
            "signup_date",
            "DATE",
            not_after_as_of=True,
            description="Day the subscription started; never after the month's as_of.",
        ),
        Column("user_gender", "TEXT", allowed=("Male", "Female")),
        _flag("user_is_senior"),
        _flag("has_family"),
        _flag("has_dependents"),
    ),
)

_NET_SERVICE_NO = ("net_service", "No")
MAX_FEE = 119

SUBSCRIPTIONS = TableSpec(
    name="subscriptions",
    description="The subscriber's plan, contract and billing.",
    columns=(
        _user_id(),
        _count("months_active", max_value=72, description="Whole months subscribed."),
        _flag(
            "plan_stream_tv",
            nullable=True,
            null_exactly_when=_NET_SERVICE_NO,
            description="Streams TV; NULL when the subscriber has no internet service.",
        ),
        _flag(
            "plan_stream_movies",
            nullable=True,
            null_exactly_when=_NET_SERVICE_NO,
            description="Streams movies; NULL when the subscriber has no internet service.",
        ),
        Column("contract_type", "TEXT", allowed=("Month-to-month", "One year", "Two year")),
        _flag("paperless_billing"),
        _amount("monthly_fee", min_value=18, max_value=MAX_FEE, description="Monthly fee in USD."),
        _amount(
            "total_paid",
            max_value=1_000_000,
            nullable=True,
            at_most_per=("months_active", MAX_FEE * 1.25),
            description="Paid to date in USD, about months_active x monthly_fee; "
            "blank for brand-new subscribers in the real drops.",
        ),
        Column("net_service", "TEXT", allowed=("DSL", "Fiber optic", "No")),
        _flag("add_on_security", nullable=True, optional_in_file=True),
        _flag("add_on_backup", nullable=True, optional_in_file=True),
        _flag("add_on_device_protect", nullable=True, optional_in_file=True),
        _flag("add_on_support", nullable=True, optional_in_file=True),
    ),
    snapshot=SnapshotSpec(
        "subscriptions_profile_snapshots",
        columns=(
            "months_active",
            "monthly_fee",
            "paperless_billing",
            "plan_stream_tv",
            "plan_stream_movies",
            "net_service",
        ),
        feature_view="subs_profile_fv",
    ),
)

USAGE_AGG_30D = TableSpec(
    name="usage_agg_30d",
    description="Viewing over the last 30 (or 7) days.",
    columns=(
        _user_id(),
        _amount("watch_hours_30d", max_value=30 * 24, description="Hours watched in 30 days."),
        _amount("avg_session_mins_7d", max_value=24 * 60),
        _count("unique_devices_30d", min_value=1, max_value=100),
        _count("skips_7d", max_value=10_000),
        _count("rebuffer_events_7d", max_value=10_000),
    ),
    snapshot=SnapshotSpec("usage_agg_30d_snapshots", feature_view="usage_agg_30d_fv"),
)

PAYMENTS_AGG_90D = TableSpec(
    name="payments_agg_90d",
    description="Failed payments over the last 90 days.",
    columns=(_user_id(), _count("failed_payments_90d", max_value=90)),
    snapshot=SnapshotSpec("payments_agg_90d_snapshots", feature_view="payments_agg_90d_fv"),
)

SUPPORT_AGG_90D = TableSpec(
    name="support_agg_90d",
    description="Support tickets over the last 90 days.",
    columns=(
        _user_id(),
        _count("support_tickets_90d", max_value=1_000),
        _amount("ticket_avg_resolution_hrs_90d", max_value=90 * 24),
    ),
    snapshot=SnapshotSpec("support_agg_90d_snapshots", feature_view="support_agg_90d_fv"),
)

LABELS = TableSpec(
    name="labels",
    description="The churn flag reported in the month's drop.",
    columns=(_user_id(), _flag("churn_label")),
    snapshot=SnapshotSpec("labels_snapshots", columns=("churn_label",)),
    label_column="churn_label",
)


TABLES: tuple[TableSpec, ...] = (
    USERS,
    SUBSCRIPTIONS,
    USAGE_AGG_30D,
    PAYMENTS_AGG_90D,
    SUPPORT_AGG_90D,
    LABELS,
)
"""The six tables of a drop, users first: every other file's user_ids must exist in users."""

DROP_FILES: tuple[str, ...] = tuple(t.file_name for t in TABLES)


SNAPSHOT_TABLES: tuple[TableSpec, ...] = tuple(t for t in TABLES if t.snapshot is not None)
