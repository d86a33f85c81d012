"""The online feature API (`streamflow api`)."""

from streamflow_assets import noise

noise.silence()

METRICS_DIR_VARS = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")
"""Where the API's workers write their metrics (prometheus_client reads the first, Feast sets
both). Set before prometheus_client is first imported: it picks files or memory then."""
