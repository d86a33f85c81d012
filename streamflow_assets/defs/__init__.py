"""The Dagster layer: declarations only, one module per asset group, each asset a few lines that
call the domain (the rest of streamflow_assets, which never imports Dagster).

- partitions.py, resources.py, common.py: the partitions, the settings resource, shared wiring
- ingestion.py, snapshots.py, feature_store.py, training.py, model.py: the five groups
- automation.py: the monthly job, schedule and new-drop sensor; the deadline and dead-run sensors
- dead_runs.py: which process does a run's work, and marking failed the runs whose process died
- graph.py: the graph as text, compared with docs/asset_graph.txt by the tests
"""

from streamflow_assets import noise

# Before any declaration: some of the known warnings are raised by the declarations themselves.
noise.silence()
