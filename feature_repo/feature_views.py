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

from streamflow_assets.feature_store.fields import snapshot_fields
from streamflow_assets.table_specs import (
    PAYMENTS_AGG_90D,
    SUBSCRIPTIONS,
    SUPPORT_AGG_90D,
    USAGE_AGG_30D,
)

SNAPSHOT_TTL = timedelta(days=31)
"""A month's values hold until the next monthly drop: a user missing from month M's file gets
month M-1's values in training M, never older ones (month ends are at most 31 days apart)."""

subs_profile_fv = FeatureView(
    name=SUBSCRIPTIONS.snapshot.feature_view,
    entities=[user],
    ttl=SNAPSHOT_TTL,
    schema=snapshot_fields(SUBSCRIPTIONS),
    source=subscriptions_profile_source,
    description="Plan, fee and tenure at the end of the month.",
)

usage_agg_30d_fv = FeatureView(
    name=USAGE_AGG_30D.snapshot.feature_view,
    entities=[user],
    ttl=SNAPSHOT_TTL,
    schema=snapshot_fields(USAGE_AGG_30D),
    source=usage_agg_30d_source,
    description="Viewing over the last 30 (or 7) days.",
)

payments_agg_90d_fv = FeatureView(
    name=PAYMENTS_AGG_90D.snapshot.feature_view,
    entities=[user],
    ttl=SNAPSHOT_TTL,
    schema=snapshot_fields(PAYMENTS_AGG_90D),
    source=payments_agg_90d_source,
    description="Failed payments over the last 90 days.",
)

support_agg_90d_fv = FeatureView(
    name=SUPPORT_AGG_90D.snapshot.feature_view,
    entities=[user],
    ttl=SNAPSHOT_TTL,
    schema=snapshot_fields(SUPPORT_AGG_90D),
    source=support_agg_90d_source,
    description="Support tickets over the last 90 days.",
)
