"""The benchmarks' load generator against a misbehaving server: failures are counted, the run goes
on."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest

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
