"""The project's shape, checked: layering contracts, the dg project, the graph as reviewed, the
adapters' version guards, the API without the orchestrator, and an install from a wheel."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import dagster as dg
import pytest

from streamflow_assets.adapters import IncompatibleLibraryError, private_detail, require
from streamflow_assets.adapters import evidently as evidently_adapter
from streamflow_assets.adapters import feast as feast_adapter
from streamflow_assets.adapters import gx as gx_adapter
from streamflow_assets.adapters import pgserver as pgserver_adapter
from streamflow_assets.db import libpq_url
from streamflow_assets.definitions import defs
from streamflow_assets.defs.graph import graph_text

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.mark.smoke
def test_import_contracts_hold():
    result = run([str(BIN / "lint-imports")], cwd=PROJECT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.smoke
def test_dg_checks_and_lists_the_definitions():
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    check = run([str(BIN / "dg"), "check", "defs"], cwd=PROJECT, env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "All definitions loaded successfully" in check.stdout + check.stderr
    listed = run([str(BIN / "dg"), "list", "defs", "--json"], cwd=PROJECT, env=env)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    keys = {asset["asset_key"] for asset in json.loads(listed.stdout)["assets"]}
    assert {"users", "labels_snapshots", "online_features", "training_dataset"} <= keys


@pytest.mark.smoke
def test_the_graph_is_the_reviewed_one():
    expected = (PROJECT / "docs" / "asset_graph.txt").read_text()
    assert graph_text(defs) == expected, (
        "the asset graph changed: review it, then `streamflow graph > docs/asset_graph.txt`"
    )


@pytest.mark.smoke
def test_the_api_imports_neither_dagster_nor_great_expectations():
    probe = (
        "import sys, streamflow_assets.serving.app; "
        "print(sorted(m for m in ('dagster', 'great_expectations') if m in sys.modules))"
    )
    result = run([sys.executable, "-c", probe], cwd=PROJECT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.smoke
def test_the_code_location_loads_quietly_without_the_libraries_that_do_the_work():
    # Every run, sensor tick and UI reload imports it: Feast, Great Expectations, scikit-learn,
    # Evidently and MLflow are imported by the steps that use them (`streamflow bench imports`).
    heavy = ("feast", "great_expectations", "sklearn", "evidently", "mlflow", "pandas")
    probe = (
        "import sys, streamflow_assets.definitions; "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    result = run([sys.executable, "-c", probe], cwd=PROJECT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert result.stderr == "", result.stderr


@pytest.mark.smoke
def test_readme_gives_every_check_the_severity_the_graph_declares():
    from streamflow_assets.definitions import defs

    declared = {
        spec.name: spec.blocking
        for asset in defs.assets
        for spec in getattr(asset, "check_specs", [])
    }
    # README's check tables: | ... | `check`, `check` | blocking or warning | ...
    documented = {}
    for line in (PROJECT / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        for i, cell in enumerate(cells[1:], start=1):
            if cell in ("blocking", "warning"):
                for name in re.findall(r"`(\w+)`", cells[i - 1]):
                    documented[name] = cell == "blocking"
    undocumented = sorted(set(declared) - set(documented))
    assert not undocumented, f"README has no severity for {undocumented}"
    wrong = sorted(n for n in declared if documented[n] != declared[n])
    assert not wrong, f"README's severity differs from the graph's for {wrong}"


@pytest.mark.smoke
def test_the_settings_resource_shows_the_variables_that_are_set(monkeypatch):
    from streamflow_assets.defs.resources import streamflow_settings

    monkeypatch.setenv("STREAMFLOW_DATABASE_URL", "postgresql://u:secret@db.example:5432/sf")
    monkeypatch.delenv("STREAMFLOW_OUTPUT_DIR", raising=False)
    resource = streamflow_settings()
    assert resource.database_url == dg.EnvVar("STREAMFLOW_DATABASE_URL")
    assert resource.output_dir == "data/processed"


# ---- adapters: each names the versions it was written against ---------------------------------


@pytest.mark.smoke
@pytest.mark.parametrize(
    ("adapter", "distribution", "too_new"),
    [
        (feast_adapter, "feast", "0.68.0"),
        (gx_adapter, "great_expectations", "2.0.0"),
        (pgserver_adapter, "pgserver", "0.2.0"),
        (evidently_adapter, "evidently", "0.8.0"),
    ],
)
def test_an_adapter_refuses_a_version_it_was_not_written_for(adapter, distribution, too_new):
    adapter.check()  # the installed version passes, private details included
    with pytest.raises(IncompatibleLibraryError) as error:
        adapter.check(installed=too_new)
    message = str(error.value)
    assert f"{distribution} {too_new} is installed" in message
    assert adapter.SUPPORTED in message


@pytest.mark.smoke
def test_a_changed_private_detail_is_named():
    with pytest.raises(IncompatibleLibraryError, match=r"feast .*: Value\.magic_val has changed"):
        private_detail("feast", "Value.magic_val", False)
    assert require("feast", ">=0.1") == feast_adapter.require("feast", ">=0.1")


@pytest.mark.smoke
def test_the_adapter_ranges_are_the_ones_pyproject_installs():
    pyproject = (PROJECT / "pyproject.toml").read_text()
    for distribution, adapter in (
        ("feast[postgres,grpcio,redis]", feast_adapter),
        ("great_expectations", gx_adapter),
        ("pgserver", pgserver_adapter),
    ):
        assert f'"{distribution}{adapter.SUPPORTED}' in pyproject, distribution


# ---- a wheel, installed elsewhere ---------------------------------------------------------------


def test_a_wheel_runs_streamflow_from_another_directory(tmp_path, database_url):
    """`pip install` of the wheel into a new environment (its dependencies taken from this one),
    then `streamflow run` on the sample from a directory that holds no source."""
    wheels = tmp_path / "wheels"
    built = run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(wheels),
            str(PROJECT),
        ],
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("*.whl")

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    # Dependencies from this environment: a path, not a site dir, so its editable hook is inert.
    deps = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (site / "streamflow-deps.pth").write_text(deps + "\n")
    installed = run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(env_dir / "bin" / "python"),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ],
        cwd=tmp_path,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {
        "PATH": f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "STREAMFLOW_DATABASE_URL": libpq_url(database_url),
        "STREAMFLOW_HOME": str(elsewhere / ".streamflow"),
    }
    where = run(
        [
            str(env_dir / "bin" / "python"),
            "-c",
            "import streamflow_assets, streamflow_assets.feature_store.repo as r, "
            "streamflow_assets.settings as s; "
            "print(streamflow_assets.__file__); print(r.feature_repo(s.Settings.from_env()))",
        ],
        cwd=elsewhere,
        env=env,
    )
    assert where.returncode == 0, where.stderr
    package, repo = where.stdout.split()
    assert package.startswith(str(site)) and repo == str(
        site / "streamflow_assets" / "feature_repo"
    )

    result = run([str(env_dir / "bin" / "streamflow"), "run"], cwd=elsewhere, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 months" in result.stdout
    assert "online features of" in result.stdout
    assert sorted(p.name for p in (elsewhere / "data" / "processed").glob("training_df_*.csv")) == [
        "training_df_2024-01-31.csv",
        "training_df_2024-02-29.csv",
        "training_df_2024-03-31.csv",
    ]
