"""What starts runs by itself: a monthly schedule and a sensor on the drops folder; and what
watches them: the online store's deadline, and runs whose process died.

Both launch `monthly_graph`, every monthly asset for one partition. Both start STOPPED unless
STREAMFLOW_AUTOMATION=on (the docker deployment sets it): on a laptop, opening `dagster dev` should
not start loading months on its own. Turn them on in the UI (Automation) or with
`dagster sensor start new_drop_sensor` / `dagster schedule start monthly_schedule`.
"""

from __future__ import annotations

import json
import os

import dagster as dg

from streamflow_assets.defs.dead_runs import fail_dead_runs
from streamflow_assets.defs.feature_store import online_freshness_checks
from streamflow_assets.defs.partitions import monthly_partitions
from streamflow_assets.defs.resources import StreamflowSettings
from streamflow_assets.ingestion.drops import DropState
from streamflow_assets.months import drop_folder, partition_key, partition_of_folder
from streamflow_assets.settings import add_months
from streamflow_assets.table_specs import TABLES

AUTOMATION_VAR = "STREAMFLOW_AUTOMATION"

monthly_graph = dg.define_asset_job(
    "monthly_graph",
    # The freshness check looks at the newest month, not the run's: its sensor evaluates it.
    selection=dg.AssetSelection.all() - dg.AssetSelection.checks(*online_freshness_checks),
    description="Every monthly asset for one month: ingestion, snapshots, the Feast registry and "
    "online store, the training CSV, the churn model and its scores.",
)


def default_status() -> dg.DefaultSensorStatus:
    on = os.environ.get(AUTOMATION_VAR, "").strip().lower() in ("1", "on", "true", "yes")
    return dg.DefaultSensorStatus.RUNNING if on else dg.DefaultSensorStatus.STOPPED


# ---- the schedule ---------------------------------------------------------------------------


@dg.schedule(
    job=monthly_graph,
    cron_schedule="0 6 1 * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus(default_status().value),
    description="On the 1st of each month at 06:00 UTC, the month that just ended — if its drop "
    "folder is complete; otherwise it skips and says which folder or files are missing.",
)
def monthly_schedule(context: dg.ScheduleEvaluationContext, streamflow: StreamflowSettings):
    settings = streamflow.settings()
    scheduled = context.scheduled_execution_time
    partition = partition_key(add_months(scheduled.date().replace(day=1), -1))
    if partition < partition_key(settings.first_month):
        return dg.SkipReason(
            f"{partition} is before STREAMFLOW_FIRST_MONTH ({settings.first_month:%Y-%m})"
        )
    folder = drop_folder(settings, partition)
    if not folder.is_dir():
        return dg.SkipReason(f"no drop for {partition}: {folder} does not exist")
    state = DropState.read(folder)
    if not state.complete:
        return dg.SkipReason(
            f"the drop for {partition} is not complete: {folder} lacks {', '.join(state.missing)}"
        )
    return dg.RunRequest(
        partition_key=partition,
        run_key=f"{partition}:{state.fingerprint()}",
        tags={"streamflow/drop": str(folder)},
    )


# ---- the sensor -----------------------------------------------------------------------------


@dg.sensor(
    job=monthly_graph,
    minimum_interval_seconds=30,
    default_status=default_status(),
    description="Watches STREAMFLOW_DROPS_DIR. A month_NNN folder whose six files are all there "
    "and unchanged since the previous tick runs its month once; a corrected drop (a file's size "
    "or time changed) runs again. A month whose files are exactly the ones its live tables were "
    "last materialized from (by `streamflow run`, the UI or an earlier sensor) is not run again. "
    "Folders that map to no partition or are still being written are reported in the tick.",
)
def new_drop_sensor(context: dg.SensorEvaluationContext, streamflow: StreamflowSettings):
    settings = streamflow.settings()
    # The cursor (kept by Dagster across restarts): each folder's fingerprint at the previous
    # tick, and the fingerprint each folder last ran with.
    cursor = json.loads(context.cursor) if context.cursor else {}
    seen: dict[str, str] = cursor.get("seen", {})
    requested: dict[str, str] = cursor.get("requested", {})
    last = monthly_partitions.get_last_partition_key()
    now: dict[str, str] = {}
    runs, reports = [], []
    folders = (
        sorted(p for p in settings.drops_dir.iterdir() if p.is_dir())
        if (settings.drops_dir.is_dir())
        else []
    )
    for folder in folders:
        partition = partition_of_folder(folder.name, settings.first_month)
        if partition is None or last is None or partition > last:
            reports.append(
                f"{folder.name}: not a month folder"
                if partition is None
                else f"{folder.name}: maps to {partition}, which has no partition yet"
            )
            continue
        state = DropState.read(folder)
        if not state.complete:
            reports.append(f"{folder.name}: waiting for {', '.join(state.missing)}")
            continue
        fingerprint = state.fingerprint()
        now[folder.name] = fingerprint
        if requested.get(folder.name) == fingerprint:
            continue  # ran already, unchanged since
        if seen.get(folder.name) != fingerprint:
            reports.append(f"{folder.name}: complete; runs if unchanged at the next tick")
            continue
        requested[folder.name] = fingerprint
        if loaded_from(context.instance, partition, state):
            reports.append(f"{folder.name}: {partition} was materialized from these files already")
            continue
        runs.append(
            dg.RunRequest(
                partition_key=partition,
                run_key=f"{folder.name}:{fingerprint}",
                tags={"streamflow/drop": str(folder)},
            )
        )
    for report in reports:
        context.log.info(report)
    next_cursor = json.dumps({"seen": now, "requested": requested}, sort_keys=True)
    if runs:
        return dg.SensorResult(run_requests=runs, cursor=next_cursor)
    return dg.SensorResult(
        skip_reason="; ".join(reports) or "every complete drop has run",
        cursor=next_cursor,
    )


def loaded_from(instance: dg.DagsterInstance, partition: str, state: DropState) -> bool:
    """Whether the newest materialization of each live table for the month recorded the drop
    file exactly as it is now (its `file stamp`: size and modification time), whoever ran it."""
    stamps = state.stamp_texts()
    for spec in TABLES:
        found = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(spec.name), asset_partitions=[partition]),
            limit=1,
        ).records
        materialization = found[0].asset_materialization if found else None
        recorded = materialization.metadata.get("file stamp") if materialization else None
        if recorded is None or recorded.value != stamps.get(spec.file_name):
            return False
    return True


# ---- the online store's deadline ------------------------------------------------------------

online_freshness_sensor = dg.build_sensor_for_freshness_checks(
    freshness_checks=online_freshness_checks,
    name="online_freshness_sensor",
    default_status=default_status(),
)


# ---- runs whose process died ----------------------------------------------------------------


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,  # starts nothing; only ends dead runs
    description="Every minute: marks failed each run still STARTED whose worker process (named "
    "on the run by the streamflow resource) is gone, e.g. killed; Dagster's default run launcher "
    "cannot tell, so such a run would show as running until its 4 h maximum runtime.",
)
def dead_run_sensor(context: dg.SensorEvaluationContext):
    dead = fail_dead_runs(context.instance)
    return dg.SkipReason(
        f"marked failed: {', '.join(dead)}" if dead else "no run whose process died"
    )
