"""Running the asset graph for a month in this process (`streamflow run`, benchmarks, tests)."""

import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from streamflow_assets.defs.dead_runs import fail_dead_runs, process_tags
from streamflow_assets.settings import Settings

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
"""Console logging for critical events only; the whole event log still goes to the instance."""


def materialize_month(
    partition: str,
    *,
    selection: str | dg.AssetSelection | None = None,
    instance: dg.DagsterInstance | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize one monthly partition of every asset (or of a selection, like
    "group:ingestion") with the settings in the environment now; failures are in the result."""
    from streamflow_assets.definitions import defs
    from streamflow_assets.defs.resources import streamflow_settings

    if instance is not None:
        fail_dead_runs(instance)
    return dg.materialize(
        defs.assets,
        partition_key=partition,
        selection=selection,
        resources={"streamflow": streamflow_settings()},
        instance=instance,
        raise_on_error=False,
        run_config=QUIET,
        tags=process_tags(),
    )


MONTHLY_GRAPH = "monthly_graph"
_STEP_ENDS = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}


def run_monthly_graph(
    partition: str,
    instance: dg.DagsterInstance,
    on_step: Callable[[str, bool, float | None], None] | None = None,
    poll_seconds: float = 0.5,
) -> dg.ExecuteInProcessResult:
    """Run the `monthly_graph` job for one month in this process, recorded in the instance like
    the runs the UI, the schedule and the sensor launch (same job, same run history). `on_step`
    hears (step, succeeded, seconds or None for a failure) as each step ends, while the run goes
    on."""
    from streamflow_assets.definitions import defs

    fail_dead_runs(instance)
    job = defs.resolve_job_def(MONTHLY_GRAPH)
    run_id = str(uuid.uuid4())
    done = threading.Event()

    def follow() -> None:
        reported: set[int] = set()
        while True:
            finished = done.wait(poll_seconds)
            for record in instance.get_records_for_run(run_id, of_type=_STEP_ENDS).records:
                event = record.event_log_entry.dagster_event
                if record.storage_id in reported or event is None:
                    continue
                reported.add(record.storage_id)
                succeeded = event.event_type == dg.DagsterEventType.STEP_SUCCESS
                seconds = event.event_specific_data.duration_ms / 1000 if succeeded else None
                on_step(event.step_key, succeeded, seconds)
            if finished:
                return

    follower = threading.Thread(target=follow, daemon=True) if on_step else None
    if follower:
        follower.start()
    try:
        return job.execute_in_process(
            partition_key=partition,
            instance=instance,
            run_config=QUIET,
            tags=process_tags(),
            run_id=run_id,
            raise_on_error=False,
        )
    finally:
        done.set()
        if follower:
            follower.join()


_MONITORING = """\
# Written by streamflow: default storage (SQLite in this folder).
# A run whose process died is marked failed: those of `streamflow run` by its next run, those
# launched by the UI or the daemon by run monitoring (the daemon; `dagster dev` runs one).
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  max_runtime_seconds: 14400
  poll_interval_seconds: 60
"""
_QUEUE = """\
# Runs launched from the UI, the schedule and the sensor wait in the queue for at most a second
# (Dagster's default is 5 s).
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
"""
_TELEMETRY = """\
# No telemetry from a data platform's runs.
telemetry:
  enabled: false
"""
INSTANCE_CONFIG = _MONITORING + _QUEUE + _TELEMETRY
_EARLIER_CONFIGS = ("telemetry:\n  enabled: false\n", _MONITORING + _TELEMETRY)
"""What earlier versions wrote: replaced by the current config (a user's own file never is)."""


def failure_text(event: dg.DagsterEvent) -> str:
    """What made a step fail: the exception its code raised (Dagster wraps it as the cause of
    its own "Error occurred while executing op ..."), or, when nothing was wrapped, the whole
    error with its stack, so a failure is never reported by its wrapper's words alone."""
    error = event.event_specific_data.error
    if error is None:
        return event.message
    raised = error.cause or error.context
    while raised is not None and not raised.message.strip():
        raised = raised.cause or raised.context
    if raised is None:
        return error.to_string().strip()
    return raised.message.strip()


def dagster_home(settings: Settings) -> Path:
    """The DAGSTER_HOME of `streamflow run` and `streamflow dev`: STREAMFLOW_HOME/dagster, with
    the project's instance config written when missing."""
    home = settings.home / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() or config.read_text() in _EARLIER_CONFIGS:
        config.write_text(INSTANCE_CONFIG)
    return home
