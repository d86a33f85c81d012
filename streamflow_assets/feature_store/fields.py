"""Feast fields from the table specs: a snapshot column's SQL type decides its Feast type."""

from feast import Field
from feast.types import Bool, Float64, Int64, String

from streamflow_assets.table_specs import TableSpec

FEAST_TYPES = {"INTEGER": Int64, "NUMERIC": Float64, "BOOLEAN": Bool, "TEXT": String}
"""DATE columns are not features (signup_date is not in any snapshot)."""


def snapshot_fields(spec: TableSpec) -> list[Field]:
    return [
        Field(name=col.name, dtype=FEAST_TYPES[col.sql_type], description=col.description)
        for col in spec.snapshot_columns()
    ]
