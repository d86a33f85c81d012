"""Materialize a month into Feast's online store: every feature view, then the registry's record
of the interval."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from feast import FeatureStore
from sqlalchemy.engine import Engine

from streamflow_assets.feature_store.online import write_month
from streamflow_assets.report import MissingInputError, markdown_table

WRITE_THREADS = 2


def materialize_month(
    engine: Engine, store: FeatureStore, start: datetime, end: datetime
) -> dict[str, object]:
    """Write every feature view's rows with event time in [start, end) online (per user the
    newest month wins) and record the interval in the registry; the metadata of the write."""
    views = store.list_feature_views()
    if not views:
        raise MissingInputError(
            "the registry holds no feature view: materialize feast_registry first"
        )
    with ThreadPoolExecutor(WRITE_THREADS) as pool:
        written = list(pool.map(lambda v: write_month(engine, store.config, v, start, end), views))
    for view in views:
        store.registry.apply_materialization(view, store.project, start, end)
    return {
        "window": f"[{start.isoformat()}, {end.isoformat()})",
        "online rows written": sum(w["rows written"] for w in written),
        "seconds": round(max(w["seconds"] for w in written), 2),
        "by feature view": markdown_table(list(written[0]), [list(w.values()) for w in written]),
    }
