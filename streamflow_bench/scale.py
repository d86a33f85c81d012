"""The whole graph at scale: `streamflow bench scale --users N [--users M]`.

For each size: generated months (two by default) through `monthly_graph`, each month in a process
of its own as a run would be, on a scratch database of the settings' server. Printed per month:
each step's seconds, the run process's peak RSS and the database's size; with two sizes, each
step's time ratio beside the users ratio, so a step that grows faster than its input shows.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

_RESULT = "streamflow-bench-scale: "
"""The child's last line: its result as JSON after this prefix."""
_PROGRESS = "streamflow-bench-scale step: "
"""A line of the child's as each step ends, which the parent prints without the prefix."""


@dataclass
class Month:
    partition: str
    users: int = 0
    steps: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    database_mb: float | None = None
    """None when the server did not answer after the month."""
    failed: str = ""


def bench_scale(sizes: list[int], months: int, seed: int) -> bool:
    """Run and print each size; whether every month succeeded (a size stops at its first
    failed month, and the sizes after it are not run)."""
    from streamflow_assets.db import database_url
    from streamflow_assets.settings import Settings

    settings = Settings.from_env()
    server = database_url(settings)
    results: dict[int, list[Month]] = {}
    for users in sizes:
        results[users] = run_size(server, users, months, seed, settings)
        _print_size(users, results[users])
        if any(month.failed for month in results[users]):
            return False
    if len(sizes) >= 2:
        _print_ratios(sizes[0], sizes[-1], results)
    return True


def run_size(server, users: int, months: int, seed: int, settings) -> list[Month]:
    import psycopg

    from streamflow_assets.db import libpq_url
    from streamflow_assets.generator import generate_drops
    from streamflow_assets.months import partition_key
    from streamflow_assets.runs import INSTANCE_CONFIG
    from streamflow_assets.settings import add_months
    from streamflow_bench.benchmarks import scratch_database

    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sf-scale-")))
        started = time.perf_counter()
        generate_drops(
            work / "drops", users=users, months=months, seed=seed, first_month=settings.first_month
        )
        print(
            f"\n{users:,} users: {months} months generated in {time.perf_counter() - started:.0f} s"
        )
        url = stack.enter_context(scratch_database(server))
        home = work / "dagster"
        home.mkdir()
        (home / "dagster.yaml").write_text(INSTANCE_CONFIG)
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "STREAMFLOW_DATABASE_URL": libpq_url(url),
            "STREAMFLOW_DROPS_DIR": str(work / "drops"),
            "STREAMFLOW_OUTPUT_DIR": str(work / "processed"),
        }
        out = []
        for i in range(months):
            partition = partition_key(add_months(settings.first_month, i))
            month = _run_month(partition, env)
            try:
                month.database_mb = _database_mb(url)
            except psycopg.OperationalError as error:  # e.g. the server died in the month
                month.failed = month.failed or f"the database did not answer: {error}"
            out.append(month)
            if month.failed:
                print(f"  {partition} FAILED: {month.failed}")
                break
        return out


def _run_month(partition: str, env: dict[str, str]) -> Month:
    """One month in a child process; each step is printed as it ends (a month of 10M users
    takes most of an hour)."""
    started = time.perf_counter()
    lines = []
    with (
        tempfile.TemporaryFile("w+") as errors,
        subprocess.Popen(
            [sys.executable, "-m", "streamflow_bench.scale", partition],
            env=env,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        ) as child,
    ):
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith(_RESULT):
                lines.append(line)
            elif line.startswith(_PROGRESS):
                print(line.removeprefix(_PROGRESS).rstrip(), flush=True)
        child.wait()
        errors.seek(0)
        failure = errors.read()[-2000:]
    seconds = time.perf_counter() - started
    if not lines:
        return Month(partition, seconds=seconds, failed=failure or "no result")
    month = Month(**json.loads(lines[-1].removeprefix(_RESULT)))
    month.seconds = seconds
    return month


def _database_mb(url) -> float:
    import psycopg

    from streamflow_assets.db import libpq_url

    with psycopg.connect(libpq_url(url)) as conn:
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return size / 2**20


def _print_size(users: int, months: list[Month]) -> None:
    steps = list(months[0].steps) if months else []
    print(f"{'step':24s}" + "".join(f"{m.partition:>12s}" for m in months))
    for step in steps:
        cells = [m.steps.get(step) for m in months]
        print(f"{step:24s}" + "".join(f"{v:11.1f}s" if _ended(v) else f"{'-':>12s}" for v in cells))
    rows = (
        ("whole month (process)", lambda m: f"{m.seconds:11.1f}s"),
        ("users", lambda m: f"{m.users:12,}"),
        ("peak RSS of the run", lambda m: f"{m.peak_rss_mb:9,.0f} MB"),
        (
            "database size",
            lambda m: f"{m.database_mb:9,.0f} MB" if m.database_mb is not None else f"{'-':>12s}",
        ),
    )
    for label, cell in rows:
        print(f"{label:24s}" + "".join(cell(m) for m in months))


def _ended(seconds: float | None) -> bool:
    """Whether a step ended (it has seconds); a failed step's are NaN, a step not run has none."""
    return seconds is not None and not math.isnan(seconds)


def _print_ratios(small: int, large: int, results: dict[int, list[Month]]) -> None:
    print(f"\n{large:,} against {small:,} users ({large / small:.1f}x), the last month of each:")
    a, b = results[small][-1], results[large][-1]
    print(f"{'step':24s} {'small s':>9s} {'large s':>9s} {'ratio':>7s}")
    for step in a.steps:
        if step in b.steps and a.steps[step] > 0:
            ratio = b.steps[step] / a.steps[step]
            print(f"{step:24s} {a.steps[step]:9.1f} {b.steps[step]:9.1f} {ratio:6.1f}x")
    print(f"{'whole month':24s} {a.seconds:9.1f} {b.seconds:9.1f} {b.seconds / a.seconds:6.1f}x")
    print(f"{'peak RSS (MB)':24s} {a.peak_rss_mb:9,.0f} {b.peak_rss_mb:9,.0f}")


def peak_rss_mb() -> float:
    """This process's peak RSS since it started its program (Linux's VmHWM). Not getrusage's
    ru_maxrss: Linux carries that over fork and exec, so a child started by the benchmark after
    it generated 10M users' drops reported the parent's 3.3 GB as its own."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(partition: str) -> int:
    """One month of `monthly_graph` in this process (the benchmark's child); its result as JSON."""
    import dagster as dg

    from streamflow_assets.runs import failure_text, run_monthly_graph

    steps: dict[str, float] = {}

    def step_done(step: str, ok: bool, seconds: float | None) -> None:
        steps[step] = seconds if seconds is not None else float("nan")
        rss = peak_rss_mb()
        took = f"{seconds:8.1f} s" if _ended(seconds) else f"{'-':>8s}  "
        print(
            f"{_PROGRESS}  {partition} {step:24s} {took}"
            f"{'' if ok else '  FAILED'}  (peak RSS so far {rss:,.0f} MB)",
            flush=True,
        )

    with dg.DagsterInstance.get() as instance:
        result = run_monthly_graph(partition, instance, on_step=step_done)
    users = 0
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        if materialization.asset_key.to_user_string() == "users":
            users = materialization.metadata["rows staged"].value
    failed = "; ".join(
        f"{e.step_key}: {failure_text(e)[:300]}" for e in result.get_step_failure_events()
    )
    peak = peak_rss_mb()
    month = {"partition": partition, "users": users, "steps": steps, "peak_rss_mb": peak,
             "failed": failed}  # fmt: skip
    print(_RESULT + json.dumps(month), flush=True)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
