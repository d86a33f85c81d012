"""StreamFlow's churn feature platform as a Dagster code location."""
