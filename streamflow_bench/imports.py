"""What importing the API and the code location costs, each in a fresh interpreter; and how
long a month launched from the UI waits before it starts."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODULES = {
    "API (streamflow_assets.serving.app)": "streamflow_assets.serving.app",
    "code location (streamflow_assets.definitions)": "streamflow_assets.definitions",
}

_PROBE = """
import json, sys, time
started = time.perf_counter()
import {module}
seconds = time.perf_counter() - started
loaded = {{name: name in sys.modules for name in ("dagster", "great_expectations")}}
from streamflow_bench.scale import peak_rss_mb  # this process's own peak, not its parent's
print(json.dumps({{"seconds": seconds, "max_rss_mb": peak_rss_mb(), **loaded}}))
"""


def import_cost(module: str) -> dict:
    """Seconds, peak RSS and which heavy libraries importing `module` loads, in a new process."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_imports(repeat: int = 3) -> None:
    print(f"{'import':48s} {'best s':>7s} {'RSS MB':>7s} {'dagster':>8s} {'GX':>5s}")
    for label, module in MODULES.items():
        runs = [import_cost(module) for _ in range(repeat)]
        best = min(runs, key=lambda r: r["seconds"])
        print(
            f"{label:48s} {best['seconds']:7.2f} {best['max_rss_mb']:7.0f} "
            f"{'yes' if best['dagster'] else 'no':>8s} "
            f"{'yes' if best['great_expectations'] else 'no':>5s}",
            flush=True,
        )


def bench_launch(users: int = 7_000) -> None:
    """A month of the sample launched from the UI as a person would: `dagster dev` on a scratch
    database and DAGSTER_HOME, `monthly_graph` submitted through the webserver's GraphQL API;
    seconds from the submission to the run's start, its first step and its end."""
    import dagster as dg
    from dagster_graphql import DagsterGraphQLClient

    from streamflow_assets.db import database_url, libpq_url
    from streamflow_assets.months import partition_key
    from streamflow_assets.runs import INSTANCE_CONFIG
    from streamflow_assets.settings import Settings
    from streamflow_bench.benchmarks import (
        bench_drops,
        free_port,
        scratch_database,
        stop_process_group,
        wait_for_http,
    )

    settings = Settings.from_env()
    with contextlib.ExitStack() as stack:
        drops = bench_drops(stack, None, users, 1, seed=42)
        url = stack.enter_context(scratch_database(database_url(settings)))
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sf-launch-")))
        (home / "dagster.yaml").write_text(INSTANCE_CONFIG)  # what `streamflow dev` uses
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "STREAMFLOW_DATABASE_URL": libpq_url(url),
            "STREAMFLOW_DROPS_DIR": str(drops),
            "STREAMFLOW_OUTPUT_DIR": str(home / "processed"),
        }
        port = free_port()
        started = time.perf_counter()
        server = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-m", "streamflow_assets.definitions",
             "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        stack.callback(stop_process_group, server)
        wait_for_http(f"http://127.0.0.1:{port}/server_info", server, timeout=180)
        print(f"dagster dev answering after {time.perf_counter() - started:.1f} s")
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        partition = partition_key(settings.first_month)
        submitted = time.time()
        run_id = client.submit_job_execution("monthly_graph", tags={"dagster/partition": partition})
        with dg.DagsterInstance.from_config(str(home)) as instance:
            marks = _follow(instance, run_id, submitted)
        print(f"{'a month of ' + format(users, ',') + ' users from the UI':40s} {'s':>7s}")
        for label, seconds in marks.items():
            print(f"  {label:38s} {seconds:7.1f}", flush=True)


def _follow(instance, run_id: str, submitted: float, timeout: float = 600) -> dict[str, float]:
    """Seconds after `submitted` (wall clock) of the run's start, first step and end."""
    import dagster as dg

    kinds = {
        dg.DagsterEventType.RUN_START: "run started",
        dg.DagsterEventType.STEP_START: "first step started",
        dg.DagsterEventType.RUN_SUCCESS: "run succeeded",
        dg.DagsterEventType.RUN_FAILURE: "run FAILED",
    }
    marks: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in instance.get_records_for_run(run_id, of_type=set(kinds)).records:
            label = kinds[record.event_log_entry.dagster_event.event_type]
            marks.setdefault(label, record.event_log_entry.timestamp - submitted)
        if "run succeeded" in marks or "run FAILED" in marks:
            return marks
        time.sleep(0.2)
    raise TimeoutError(f"run {run_id} did not end within {timeout:.0f} s")
