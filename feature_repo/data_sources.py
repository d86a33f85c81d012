"""PostgreSQL sources over the monthly snapshot tables (one row per user and as_of).

`event_timestamp` is a timestamptz (as_of at 00:00 UTC): a DATE compared with Feast's timestamptz
entity timestamps would depend on the session time zone.
"""

from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
    PostgreSQLSource,
)

from streamflow_assets.table_specs import (
    PAYMENTS_AGG_90D,
    SUBSCRIPTIONS,
    SUPPORT_AGG_90D,
    USAGE_AGG_30D,
    TableSpec,
)


def snapshot_source(spec: TableSpec) -> PostgreSQLSource:
    return PostgreSQLSource(
        name=spec.snapshot.name,
        table=spec.snapshot.name,
        timestamp_field="event_timestamp",
        description=f"Monthly snapshots of {spec.name}: {spec.description}",
    )


subscriptions_profile_source = snapshot_source(SUBSCRIPTIONS)
usage_agg_30d_source = snapshot_source(USAGE_AGG_30D)
payments_agg_90d_source = snapshot_source(PAYMENTS_AGG_90D)
support_agg_90d_source = snapshot_source(SUPPORT_AGG_90D)
