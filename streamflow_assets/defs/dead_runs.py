"""Runs whose process died: each run is tagged with the process doing its work, and a run still
STARTED whose process is gone is marked failed (Dagster's default run launcher cannot tell)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dagster as dg

PID_TAG, HOST_TAG = "streamflow/pid", "streamflow/host"
"""Which process does a run's work: a run whose process is gone is dead. Runs of this module
carry them from the start; runs launched by the UI, the daemon or the CLI get them from the
`streamflow` resource as their worker process starts."""


def process_tags() -> dict[str, str]:
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def tag_run_process(instance: dg.DagsterInstance, run_id: str) -> None:
    """Tag the run with this process (its worker), unless it already names it."""
    run = instance.get_run_by_id(run_id)
    if run is not None and run.tags.get(PID_TAG) != str(os.getpid()):
        instance.add_run_tags(run_id, process_tags())


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the runs of this host still STARTED whose worker process is gone (killed
    mid-run, they would show as running forever); their ids. Called by `streamflow run` before
    its runs and by the `dead_run_sensor` every minute (sensors are evaluated in the code
    location's server, the host whose processes run the UI's and the daemon's runs)."""
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
    """Whether the process runs: not gone, and not a zombie (dead, its exit status not yet
    collected by its parent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # /proc/<pid>/stat: "pid (command) state ..."; the command may hold spaces and parens.
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:  # gone meanwhile
        return False
    except OSError:  # no /proc: not Linux
        return True
