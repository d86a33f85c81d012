"""What importing the API and the code location costs, each in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

MODULES = {
    "API (streamflow_assets.serving.app)": "streamflow_assets.serving.app",
    "code location (streamflow_assets.definitions)": "streamflow_assets.definitions",
}

_PROBE = """
import json, resource, sys, time
started = time.perf_counter()
import {module}
seconds = time.perf_counter() - started
print(json.dumps({{
    "seconds": seconds,
    "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "dagster": "dagster" in sys.modules,
    "great_expectations": "great_expectations" in sys.modules,
}}))
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
