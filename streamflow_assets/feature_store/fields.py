"""Feast fields from the table specs: a snapshot column's SQL type decides its Feast type."""

from feast import Field
from feast.types import Bool, Float64, Int64, String

from streamflow_assets.table_specs import Column, TableSpec

FEAST_TYPES = {"INTEGER": Int64, "NUMERIC": Float64, "BOOLEAN": Bool, "TEXT": String}
"""DATE columns are not features (signup_date is not in any snapshot)."""


NULLABLE_TAG = "nullable"
"""A feature may be empty in the training set when its field carries this tag (the value says
when) or, for on-demand views, when the view's tag lists it (comma-separated names). Any other
empty value fails the training set's check."""


def snapshot_fields(spec: TableSpec) -> list[Field]:
    return [
        Field(
            name=col.name,
            dtype=FEAST_TYPES[col.sql_type],
            description=col.description,
            tags={NULLABLE_TAG: _when_null(col)} if col.nullable else {},
        )
        for col in spec.snapshot_columns()
    ]


def _when_null(col: Column) -> str:
    if col.null_exactly_when:
        other, value = col.null_exactly_when
        return f"exactly when {other} is {value}"
    return "may be empty"
