"""Request-time features derived from the feature views, computed by Feast at read time.

Defined once here and part of the `churn_features` service, so the training CSV and online
serving run the same transformation.
"""

import pandas as pd
from feast import Field
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, String
from feature_views import subs_profile_fv, support_agg_90d_fv, usage_agg_30d_fv

from streamflow_assets.feature_store.fields import NULLABLE_TAG


@on_demand_feature_view(
    sources=[subs_profile_fv, usage_agg_30d_fv, support_agg_90d_fv],
    schema=[
        Field(name="fee_per_watch_hour", dtype=Float64),
        Field(name="tenure_bucket", dtype=String),
        Field(name="tickets_per_active_month", dtype=Float64),
    ],
    mode="pandas",
    # Feast compares on-demand fields with the ones it infers, tags included: the view says it.
    tags={NULLABLE_TAG: "fee_per_watch_hour"},
    description="Monthly fee per hour watched (empty when nothing was watched), tenure bucket, "
    "support tickets per month of the last three (or fewer, for new users).",
)
def churn_derived_features(features: pd.DataFrame) -> pd.DataFrame:
    # Feast stores this function in the registry and runs it in other processes (the API,
    # `feast serve`): everything it uses is imported or defined inside it.
    import numpy as np
    import pandas as pd

    # Upper bound (inclusive) of months_active, and the bucket's label.
    tenure_buckets = [(6, "0-6"), (12, "7-12"), (24, "13-24"), (48, "25-48")]

    fee = features["monthly_fee"].astype("float64")
    hours = features["watch_hours_30d"].astype("float64")
    months = features["months_active"].astype("float64")
    tickets = features["support_tickets_90d"].astype("float64")

    out = pd.DataFrame(index=features.index)
    out["fee_per_watch_hour"] = (fee / hours.where(hours > 0)).round(4)
    conditions = [months <= bound for bound, _ in tenure_buckets]
    labels = np.select(conditions, [label for _, label in tenure_buckets], "49+")
    out["tenure_bucket"] = pd.Series(labels, index=features.index).where(months.notna())
    out["tickets_per_active_month"] = (tickets / months.clip(lower=1, upper=3)).round(4)
    return out
