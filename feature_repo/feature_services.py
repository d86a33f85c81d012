"""`churn_features`: what the churn model trains on and what the API serves, one list for both."""

from feast import FeatureService
from feature_views import (
    payments_agg_90d_fv,
    subs_profile_fv,
    support_agg_90d_fv,
    usage_agg_30d_fv,
)
from on_demand_features import churn_derived_features

churn_features = FeatureService(
    name="churn_features",
    features=[
        subs_profile_fv,
        usage_agg_30d_fv,
        payments_agg_90d_fv,
        support_agg_90d_fv,
        churn_derived_features,
    ],
    description="Every snapshot feature plus the request-time ones: training and serving both "
    "read through this service, so they cannot drift apart.",
)
