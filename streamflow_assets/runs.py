"""Running the asset graph for a month in this process (`streamflow run`, benchmarks, tests)."""

import os
import socket

import dagster as dg

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
        tags={PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()},
    )


PID_TAG, HOST_TAG = "streamflow/pid", "streamflow/host"
"""Which process runs an in-process run: a run whose process is gone is dead."""


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the in-process runs of this host still STARTED whose process is gone (killed
    mid-run, they would show as running forever); their ids. Runs launched by the daemon or the
    UI are watched by Dagster's run monitoring (the instance configuration)."""
    host = socket.gethostname()
    dead = []
    for record in instance.get_run_records(
        dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED], tags={HOST_TAG: host})
    ):
        run = record.dagster_run
        pid = int(run.tags.get(PID_TAG, "0") or 0)
        if pid and pid != os.getpid() and not _alive(pid):
            instance.report_run_failed(
                run, f"the process running it ({host}, pid {pid}) is gone: it was killed"
            )
            dead.append(run.run_id)
    return dead


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
