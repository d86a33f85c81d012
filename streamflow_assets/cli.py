"""The `streamflow` command: sample drops, the database in use, and the main job."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import click
import sqlalchemy as sa

from streamflow_assets import noise
from streamflow_assets.db import DatabaseUnavailableError, database_url, get_engine, libpq_url
from streamflow_assets.embedded import EmbeddedServerError, running_server, stop_server
from streamflow_assets.settings import (
    FIRST_MONTH_VAR,
    ONLINE_STORES,
    DropFolderError,
    Settings,
    SettingsError,
    parse_month,
)
from streamflow_assets.warehouse import staging_leftovers

SAMPLE_USERS = 7_000
SAMPLE_MONTHS = 3
SAMPLE_SEED = 42
"""`streamflow run` on an empty drops folder writes this sample: the size of a real drop."""


class _Group(click.Group):
    """Known configuration and drop-folder problems end in one clear line, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (
            SettingsError,
            DatabaseUnavailableError,
            EmbeddedServerError,
            DropFolderError,
        ) as exc:
            raise click.ClickException(str(exc)) from None


def _server(engine) -> str:
    with engine.connect() as conn:
        version = conn.execute(sa.text("SHOW server_version")).scalar_one()
    return f"{libpq_url(engine.url)} (PostgreSQL {version})"


@click.group(cls=_Group)
def main() -> None:
    """StreamFlow feature platform."""
    noise.silence()


@main.command()
@click.option("--users", type=click.IntRange(min=1), default=SAMPLE_USERS, show_default=True)
@click.option("--months", type=click.IntRange(min=1), default=SAMPLE_MONTHS, show_default=True)
@click.option("--seed", type=int, default=SAMPLE_SEED, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Drops folder [default: STREAMFLOW_DROPS_DIR]",
)
@click.option("--first-month", help=f"YYYY-MM of month_000 [default: {FIRST_MONTH_VAR}]")
@click.option("--dynamic", is_flag=True, help="Churned users leave, new users sign up.")
@click.option("--overwrite", is_flag=True, help="Replace month folders that already exist.")
def generate(users, months, seed, out, first_month, dynamic, overwrite) -> None:
    """Write sample monthly drops (month_000, month_001, ...)."""
    from streamflow_assets.generator import generate_drops, month_folder

    settings = Settings.from_env()
    out = out or settings.drops_dir
    first = parse_month(first_month, "--first-month") if first_month else settings.first_month
    existing = [month_folder(i) for i in range(months) if (out / month_folder(i)).exists()]
    if existing and not overwrite:
        raise click.ClickException(
            f"{out} already holds {', '.join(existing)}; pass --overwrite to replace them"
        )
    started = time.perf_counter()
    folders = generate_drops(
        out, users=users, months=months, seed=seed, first_month=first, dynamic=dynamic
    )
    click.echo(
        f"wrote {len(folders)} monthly drops of ~{users:,} users to {out} "
        f"in {time.perf_counter() - started:.1f} s"
    )


@main.group()
def db() -> None:
    """The PostgreSQL in use (STREAMFLOW_DATABASE_URL, or the embedded server)."""


@db.command("url")
def db_url() -> None:
    """Print the database URL in use, starting the embedded server if needed."""
    click.echo(libpq_url(database_url(Settings.from_env())))


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL."""
    settings = Settings.from_env()
    if settings.database_url is not None:
        raise click.ClickException(
            "STREAMFLOW_DATABASE_URL is set: that server is not managed by streamflow"
        )
    if stop_server(settings.home):
        click.echo(f"stopped the embedded PostgreSQL under {settings.home}")
    else:
        click.echo(f"no embedded PostgreSQL is running under {settings.home}")


@db.command("status")
def db_status() -> None:
    """Say which database is in use and whether it answers."""
    settings = Settings.from_env()
    if settings.database_url is None:
        info = running_server(settings.home)
        state = f"running (pid {info.pid})" if info else "not running"
        click.echo(f"embedded PostgreSQL under {settings.home}: {state}")
        if info is None:
            return
    engine = get_engine(settings)
    click.echo(f"{_server(engine)} answers")
    leftovers = staging_leftovers(engine)
    if leftovers:
        total = sum(size for *_, size in leftovers)
        click.echo(
            f"staging: {len(leftovers)} tables, {total / 2**20:,.1f} MB (a live run's work, or "
            "what a killed run left: the next run of any month removes the latter)"
        )
        for name, month, size in leftovers:
            click.echo(f"  {name}  {month or '-'}  {size / 2**20:,.1f} MB")
    else:
        click.echo("staging: empty")


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--port", type=int, default=3000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.argument("dagster_args", nargs=-1, type=click.UNPROCESSED)
def dev(port, host, dagster_args) -> None:
    """The Dagster UI (dagster dev) on this project's settings and run history."""
    from streamflow_assets.runs import dagster_home

    settings = Settings.from_env()
    os.environ.setdefault("DAGSTER_HOME", str(dagster_home(settings)))
    # The dagster beside this interpreter: the venv need not be activated.
    command = [
        str(Path(sys.executable).parent / "dagster"),
        "dev",
        "-m",
        "streamflow_assets.definitions",
        "--host",
        host,
        "--port",
        str(port),
        *dagster_args,
    ]
    click.echo(f"DAGSTER_HOME={os.environ['DAGSTER_HOME']}; the UI: http://{host}:{port}")
    os.execv(command[0], command)


@main.command("feast-ui")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8888, show_default=True)
def feast_ui(host: str, port: int) -> None:
    """Feast's web UI over feature_repo/ (the same registry Dagster applies)."""
    from streamflow_assets.feature_store.repo import feast_command, feature_repo

    settings = Settings.from_env()
    get_engine(settings)  # a clear error now rather than a Feast traceback
    repo = feature_repo(settings)
    click.echo(f"Feast UI of {repo}: http://{host}:{port}")
    command = feast_command(repo, "ui", "--host", host, "--port", str(port))
    os.execv(command[0], command)


@main.group()
def bench() -> None:
    """Benchmarks that print numbers."""


@bench.command("ingest")
@click.option("--users", type=click.IntRange(min=1), default=1_000_000, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--drops",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Use these drops (month_000, month_001) instead of generating them.",
)
@click.option("--skip-naive", is_flag=True, help="Leave out the naive method (about 4 min at 1M).")
def bench_ingest(users, seed, drops, skip_naive) -> None:
    """Time a month through the pipeline against plain COPY and the naive upserts."""
    from streamflow_bench.benchmarks import bench_ingest

    bench_ingest(users=users, seed=seed, drops=drops, skip_naive=skip_naive)


def online_store_option(text: str):
    """`--online-store` of a benchmark: one of the online stores the settings know."""
    return click.option(
        "--online-store",
        type=click.Choice(ONLINE_STORES),
        default="postgres",
        show_default=True,
        help=text,
    )


@bench.command("feast")
@click.option("--users", type=click.IntRange(min=1), default=1_000_000, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--months", type=click.IntRange(min=1), default=6, show_default=True)
@click.option(
    "--drops",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Use these drops (month_000, ...) instead of generating them.",
)
@click.option(
    "--skip-feast-default",
    is_flag=True,
    help="Leave out Feast's own materialize and get_historical_features (7+ min at 1M).",
)
@online_store_option(
    "The online store both write into (Redis: STREAMFLOW_REDIS_URL, this project's keys replaced)."
)
def bench_feast(users, seed, months, drops, skip_feast_default, online_store) -> None:
    """Time online materialization and training CSVs against Feast's default paths."""
    from streamflow_bench.benchmarks import bench_feast

    bench_feast(
        users=users,
        seed=seed,
        drops=drops,
        months=months,
        feast_default=not skip_feast_default,
        online_store=online_store,
    )


@bench.command("api")
@click.option("--users", type=click.IntRange(min=1), default=1_000_000, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--drops",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Use these drops (month_000 is loaded) instead of generating one month.",
)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option(
    "--requests",
    type=click.IntRange(min=100),
    default=5000,
    show_default=True,
    help="Requests per scenario.",
)
@click.option(
    "--seconds", type=float, default=20.0, show_default=True, help="Time limit per scenario."
)
@click.option(
    "--during-publish",
    is_flag=True,
    help="Instead of the table: one user at c=8 idle, then while the next month (month_001) "
    "is written and published online, counting failed and mixed-month answers.",
)
@online_store_option(
    "Also serve from this store (the month written there too): streamflow api on PostgreSQL "
    "and on it, feast serve on it."
)
def bench_api(users, seed, drops, workers, requests, seconds, during_publish, online_store) -> None:
    """Latency and requests/s of `streamflow api` beside `feast serve` on the same store."""
    from streamflow_bench.benchmarks import bench_api

    bench_api(
        users=users,
        seed=seed,
        drops=drops,
        workers=workers,
        requests=requests,
        seconds=seconds,
        during_publish=during_publish,
        online_store=online_store,
    )


@bench.command("faults")
@click.option("--users", type=click.IntRange(min=1), default=200_000, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--drops",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Use these drops (month_000, month_001) instead of generating them.",
)
def bench_faults(users, seed, drops) -> None:
    """Kill a month's run at each stage (SIGKILL) and time what it leaves and the re-run."""
    from streamflow_bench.faults import bench_faults

    bench_faults(users=users, seed=seed, drops=drops)


@bench.command("scale")
@click.option(
    "--users",
    "sizes",
    type=click.IntRange(min=1),
    multiple=True,
    default=(10_000_000,),
    show_default=True,
    help="Users a month; give two sizes (e.g. --users 1000000 --users 10000000) for the ratios.",
)
@click.option("--months", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
def bench_scale(sizes, months, seed) -> None:
    """The whole graph month by month at each size: seconds per step, peak RSS, database size."""
    from streamflow_bench.scale import bench_scale

    if not bench_scale(sorted(sizes), months=months, seed=seed):
        raise SystemExit(1)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--access-log/--no-access-log", default=False, show_default=True)
def api(host: str, port: int, workers: int, access_log: bool) -> None:
    """Serve the online features over HTTP (OpenAPI docs at /docs)."""
    import uvicorn

    from streamflow_assets.serving import METRICS_DIR_VARS

    get_engine(Settings.from_env())  # a clear error now rather than in every worker
    with tempfile.TemporaryDirectory(prefix="streamflow-metrics-") as folder:
        # The workers' metrics, summed by /metrics: a folder of this server's own, fresh at start
        # and gone at exit. Never an inherited one: a parent process that imported Feast passes
        # down the folder Feast made for itself, shared with every other child of that parent.
        for variable in METRICS_DIR_VARS:
            os.environ[variable] = folder
        uvicorn.run(
            "streamflow_assets.serving.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            access_log=access_log,
            log_level="warning",
        )


@main.group()
def mlflow() -> None:
    """The churn model's MLflow tracking store and registry (in the project's PostgreSQL)."""


@mlflow.command("uri")
def mlflow_uri() -> None:
    """Print the MLflow tracking (and registry) URI, creating its schema if needed."""
    from streamflow_assets.model_registry import Registry

    click.echo(Registry(Settings.from_env()).uri)


@mlflow.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
def mlflow_ui(host: str, port: int) -> None:
    """MLflow's web UI over the tracking store: candidates, their comparison, the champion."""
    from streamflow_assets.model_registry import Registry, artifact_root

    settings = Settings.from_env()
    registry = Registry(settings)
    click.echo(f"MLflow UI: http://{host}:{port}")
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "ui",
        "--backend-store-uri",
        registry.uri,
        "--default-artifact-root",
        artifact_root(settings).as_uri(),
        "--host",
        host,
        "--port",
        str(port),
    ]
    os.execv(command[0], command)


@main.command()
def graph() -> None:
    """Print the asset graph as text (docs/asset_graph.txt holds the reviewed copy)."""
    from streamflow_assets.definitions import defs
    from streamflow_assets.defs.graph import graph_text

    click.echo(graph_text(defs), nl=False)


@bench.command("imports")
@click.option(
    "--launch/--no-launch",
    default=True,
    show_default=True,
    help="Also launch a month of the sample from `dagster dev` (scratch database) and time it.",
)
def bench_imports(launch: bool) -> None:
    """Import time and memory of the API and of the code location, each in a new process; the
    wait before a month launched from the UI starts."""
    from streamflow_bench.imports import bench_imports, bench_launch

    bench_imports()
    if launch:
        bench_launch()


@main.command()
@click.option(
    "--month",
    "months_wanted",
    multiple=True,
    metavar="YYYY-MM",
    help="Only this month (repeatable) [default: every month of the drops folder].",
)
def run(months_wanted: tuple[str, ...]) -> None:
    """The main job: `monthly_graph` for every month of the drops folder, oldest first, recorded
    in the run history `streamflow dev` shows."""
    import dagster as dg

    from streamflow_assets.generator import generate_drops
    from streamflow_assets.months import partitions_in_drops
    from streamflow_assets.runs import dagster_home, failure_text, run_monthly_graph

    settings = Settings.from_env()
    # --month is checked before anything is written: a bad one changes nothing.
    wanted = {f"{parse_month(m, '--month'):%Y-%m}" for m in months_wanted}
    if not any(settings.drops_dir.glob("month_*")):
        if wanted:
            raise click.ClickException(
                f"--month {', '.join(sorted(wanted))}: {settings.drops_dir} holds no drops (run "
                "without --month to write the sample and load all of it)"
            )
        click.echo(f"{settings.drops_dir} holds no drops: writing a sample")
        generate_drops(
            settings.drops_dir,
            users=SAMPLE_USERS,
            months=SAMPLE_MONTHS,
            seed=SAMPLE_SEED,
            first_month=settings.first_month,
            dynamic=True,
        )
    months = partitions_in_drops(settings)
    if wanted:
        if missing := sorted(wanted - set(months)):
            raise click.ClickException(
                f"--month {', '.join(missing)}: no drop folder in {settings.drops_dir} (it holds "
                f"{', '.join(months) or 'none'})"
            )
        months = {key: folder for key, folder in months.items() if key in wanted}
    click.echo(f"database: {_server(get_engine(settings))}")
    click.echo(f"drops: {len(months)} months in {settings.drops_dir}")

    # Runs are recorded where `dagster dev` (make dev) finds them.
    os.environ.setdefault("DAGSTER_HOME", str(dagster_home(settings)))
    instance = dg.DagsterInstance.get()
    failed = []
    for partition, folder in months.items():
        click.echo(f"  {partition} ({folder.name}): monthly_graph")

        def step_done(step: str, ok: bool, step_seconds: float | None, month=partition) -> None:
            took = f"{step_seconds:.1f} s" if step_seconds is not None else "FAILED"
            click.echo(f"    {month} {step:32s} {took}")

        started = time.perf_counter()
        result = run_monthly_graph(partition, instance, on_step=step_done)
        seconds = time.perf_counter() - started
        if result.success:
            click.echo(f"  {partition} ({folder.name}): {_summary(result)} in {seconds:.1f} s")
        else:
            failed.append(partition)
            click.echo(f"  {partition} ({folder.name}): FAILED in {seconds:.1f} s", err=True)
            for event in result.get_step_failure_events():
                click.echo(f"    {event.step_key}: {failure_text(event)}", err=True)
    if failed:
        raise click.ClickException(f"{len(failed)} month(s) failed: {', '.join(failed)}")
    _show_results(settings, list(months))


def _show_results(settings: Settings, partitions: list[str]) -> None:
    """Where the training CSVs are, and one user's features as the online store serves them."""
    from streamflow_assets.feature_store.repo import FEATURE_SERVICE, feature_store
    from streamflow_assets.feature_store.training import training_path
    from streamflow_assets.model_registry import Registry

    click.echo("training CSVs:")
    for partition in partitions:
        click.echo(f"  {training_path(settings.output_dir, partition)}")
    newest = training_path(settings.output_dir, partitions[-1])
    with newest.open() as csv:
        csv.readline()
        user_id = csv.readline().split(",")[0].strip('"')
    store = feature_store(settings)
    service = store.get_feature_service(FEATURE_SERVICE)
    online = store.get_online_features(features=service, entity_rows=[{"user_id": user_id}])
    values = online.to_dict()
    click.echo(f"online features of {user_id} ({FEATURE_SERVICE}):")
    for projection in service.feature_view_projections:
        for feature in projection.features:
            click.echo(f"  {feature.name:32s} {values[feature.name][0]}")
    registry = Registry(settings)
    for partition in partitions:
        decision = registry.decisions().get(partition)
        if decision is not None:
            click.echo(f"churn model {partition}: {decision.label}, {decision.reason}")
    champion = registry.current_champion()
    if champion is not None:
        metrics = registry.client.get_run(champion.run_id).data.metrics
        click.echo(
            f"champion: {champion.label}, ROC AUC {metrics['roc_auc']:.4f}, log loss "
            f"{metrics['log_loss']:.4f} on its hold-out (`streamflow mlflow ui` to compare)"
        )


def _summary(result) -> str:
    materialized = result.get_asset_materialization_events()
    users = [
        e.materialization.metadata
        for e in materialized
        if e.materialization.asset_key.to_user_string() == "users"
    ]
    rows = f"{users[0]['rows staged'].value:,} users, " if users else ""
    return f"{rows}{len(materialized)} assets"


if __name__ == "__main__":
    sys.exit(main())
