"""The benchmarks' load generator against a misbehaving server: failures are counted, the run goes
on."""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from streamflow_assets.embedded import stop_server
from streamflow_assets_tests.conftest import traversable_tmp_dir
from streamflow_bench.benchmarks import asyncio_run_load

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"


@pytest.fixture
def flaky_server() -> Iterator[str]:
    """A real HTTP server on a socket that answers one request per connection, and on every
    third connection sends half an answer and resets it (RST)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        served = 0
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            served += 1
            with conn:
                conn.recv(65536)
                if served % 3 == 0:  # half an answer, then a reset
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:
                    conn.sendall(OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    listener.close()


def test_a_reset_connection_is_a_failed_request_and_the_run_goes_on(flaky_server):
    stats = asyncio_run_load(
        "streamflow api", flaky_server, ["7590-VHVEG"], concurrency=2, per_request=1,
        count=60, seconds=30,
    )  # fmt: skip
    failed = int(stats["failed"].split()[0])
    assert failed >= 15, stats["failed"]  # the resets (a third of 60), counted
    assert stats["n"] > 0 and stats["n"] + failed == 60  # and every other request answered


def test_an_answer_the_inspector_rejects_is_a_failed_request(flaky_server):
    inspected = []

    def reject_every_fourth(body: bytes) -> str | None:
        inspected.append(body)
        return "mixed months" if len(inspected) % 4 == 0 else None

    stats = asyncio_run_load(
        "streamflow api", flaky_server, ["7590-VHVEG"], concurrency=2, per_request=1,
        count=60, seconds=30, inspect=reject_every_fourth,
    )  # fmt: skip
    assert "mixed months" in stats["failed"] and "ClientPayloadError" in stats["failed"]
    assert stats["n"] + int(stats["failed"].split()[0]) == 60


def test_bench_scale_prints_every_step_the_peak_rss_and_the_ratios(project_env):
    """Two small sizes through the whole graph, each month in a process of its own."""
    done = subprocess.run(
        [sys.executable, "-m", "streamflow_assets.cli", "bench", "scale",
         "--users", "300", "--users", "900", "--months", "1"],
        env=dict(os.environ), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "FAILED" not in out, out
    for step in ("ingest_monthly_drop", "online_features", "training_dataset", "churn_scores"):
        # as each size's month ran, in both sizes' tables, and in the ratios
        assert len(re.findall(rf"^  2024-01 {step} +[\d.]+ s  \(peak RSS", out, re.M)) == 2, out
        assert len(re.findall(rf"^{step} +[\d.]+", out, re.M)) == 3, out
    sizes = re.findall(r"^users\s+([\d,]+)$", out, re.MULTILINE)
    assert [int(s.replace(",", "")) for s in sizes] == [300, 900]
    rss = [
        int(v.replace(",", ""))
        for v in re.findall(r"^peak RSS of the run\s+([\d,]+) MB", out, re.M)
    ]
    assert len(rss) == 2 and all(100 < mb < 8_000 for mb in rss)
    assert "900 against 300 users (3.0x)" in out


def test_bench_scale_reports_a_server_gone_mid_month_and_exits_1(tmp_path):
    """The embedded server is stopped as the month's first step ends: the month is reported
    FAILED with what the run saw, the scratch database left behind is named, and the command
    exits 1, without a traceback of its own."""
    home = traversable_tmp_dir("sf-bench-gone-")
    env = {k: v for k, v in os.environ.items() if k != "STREAMFLOW_DATABASE_URL"}
    env |= {"STREAMFLOW_HOME": str(home), "STREAMFLOW_FIRST_MONTH": "2024-01"}
    errors = tmp_path / "stderr"
    try:
        with errors.open("w") as stderr:
            done = subprocess.Popen(
                [sys.executable, "-m", "streamflow_assets.cli", "bench", "scale",
                 "--users", "300", "--months", "1"],
                env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
            )  # fmt: skip
            out = []
            assert done.stdout is not None
            for line in done.stdout:
                out.append(line)
                if "2024-01 ingest_monthly_drop" in line:
                    assert stop_server(home)
            assert done.wait(timeout=300) == 1, "".join(out)
    finally:
        stop_server(home)
        shutil.rmtree(home, ignore_errors=True)
    text, stderr_text = "".join(out), errors.read_text()
    assert "2024-01 ingest_monthly_drop" in text
    assert re.search(r"^  2024-01 FAILED: .*(connect|server|terminat)", text, re.M | re.I), text
    assert "Traceback" not in stderr_text, stderr_text
    assert re.search(r"could not drop the scratch database streamflow_bench_\w+", stderr_text)


def test_a_childs_peak_rss_is_its_own_not_its_parents():
    """The benchmark's child measures itself: a parent that held 600 MB when it started the
    child (as `bench scale` does after generating 10M users) does not count."""
    child = "from streamflow_bench.scale import peak_rss_mb; print(peak_rss_mb())"
    parent = (
        "import subprocess, sys\n"
        "held = b'x' * (600 << 20)\n"
        f"print(subprocess.run([sys.executable, '-c', {child!r}], capture_output=True, "
        "text=True, check=True).stdout)"
    )
    done = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert 10 < float(done.stdout) < 300
