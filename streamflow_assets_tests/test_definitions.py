"""The code location loads, in-process and through the dagster CLI."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from streamflow_assets.definitions import defs

pytestmark = pytest.mark.smoke
PROJECT = Path(__file__).resolve().parents[1]


def test_definitions_are_loadable():
    dg.Definitions.validate_loadable(defs)


def test_dagster_cli_validates_the_code_location():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "definitions",
            "validate",
            "-m",
            "streamflow_assets.definitions",
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr


def test_workspace_points_at_the_code_location():
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_documented_commands_work_from_a_plain_shell(project_env, tmp_path):
    """`.venv/bin/streamflow dev`, as README shows it, with the venv not activated: a PATH
    without the venv's bin, no VIRTUAL_ENV. It once exec'd a bare `dagster` and crashed."""
    from streamflow_assets_tests.conftest import free_port, start_process, stop_process

    streamflow = Path(sys.executable).parent / "streamflow"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PATH", "DAGSTER_HOME")}
    env["PATH"] = "/usr/bin:/bin"  # the settings are project_env's: a test database, tmp_path
    port = free_port()
    ui = start_process(
        [str(streamflow), "dev", "--port", str(port)],
        env,
        f"http://127.0.0.1:{port}/server_info",
        timeout=180,
    )
    stop_process(ui)
    assert (tmp_path / "home" / "dagster" / "dagster.yaml").is_file()
    uri = subprocess.run(
        [str(streamflow), "mlflow", "uri"], env=env, capture_output=True, text=True, timeout=120
    )
    assert uri.returncode == 0, uri.stderr
    assert uri.stdout.startswith("postgresql")


def test_the_instance_config_replaces_an_earlier_versions_but_never_a_users_own(tmp_path):
    from streamflow_assets.runs import _EARLIER_CONFIGS, INSTANCE_CONFIG, dagster_home
    from streamflow_assets.settings import Settings

    settings = dataclasses.replace(Settings.from_env(), home=tmp_path / "home")
    config = dagster_home(settings) / "dagster.yaml"
    assert config.read_text() == INSTANCE_CONFIG  # written when missing
    for earlier in _EARLIER_CONFIGS:
        config.write_text(earlier)
        dagster_home(settings)
        assert config.read_text() == INSTANCE_CONFIG
    own = INSTANCE_CONFIG + "# my own setting\n"
    config.write_text(own)
    dagster_home(settings)
    assert config.read_text() == own
