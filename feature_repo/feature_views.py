"""The four feature views, one per snapshot table, with every snapshot column as a feature.

Fields come from the table specs, so a column added there reaches Feast without an edit here.
"""

from datetime import timedelta

from data_sources import (
    payments_agg_90d_source,
    subscriptions_profile_source,
    support_agg_90d_source,
    usage_agg_30d_source,
)
from entities import user
from feast import FeatureView
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
    PostgreSQLSource,
)

from streamflow_assets.feature_store.fields import snapshot_fields
from streamflow_assets.table_specs import (
    PAYMENTS_AGG_90D,
    SUBSCRIPTIONS,
    SUPPORT_AGG_90D,
    USAGE_AGG_30D,
    TableSpec,
)

SNAPSHOT_TTL = timedelta(days=31)
"""A month's values hold until the next monthly drop: a user missing from month M's file gets
month M-1's values in training M, never older ones (month ends are at most 31 days apart)."""


def snapshot_view(spec: TableSpec, source: PostgreSQLSource) -> FeatureView:
    """The feature view over a table's monthly snapshots, named in the table spec."""
    return FeatureView(
        name=spec.snapshot.feature_view,
        entities=[user],
        ttl=SNAPSHOT_TTL,
        schema=snapshot_fields(spec),
        source=source,
        description=f"{spec.description} Monthly snapshots of {spec.name}.",
    )


subs_profile_fv = snapshot_view(SUBSCRIPTIONS, subscriptions_profile_source)
usage_agg_30d_fv = snapshot_view(USAGE_AGG_30D, usage_agg_30d_source)
payments_agg_90d_fv = snapshot_view(PAYMENTS_AGG_90D, payments_agg_90d_source)
support_agg_90d_fv = snapshot_view(SUPPORT_AGG_90D, support_agg_90d_source)
