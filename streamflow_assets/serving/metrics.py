"""The API's Prometheus metrics (prometheus_client), served at /metrics.

Requests and their latency per endpoint (the route's path template, not the raw path: one series
per endpoint, whatever the user_id) and status; the online store's read latency; the champion
model version being served. Every worker writes its samples to PROMETHEUS_MULTIPROC_DIR, a folder
`streamflow api` makes for the server, and /metrics adds them up, so a scrape sees the whole server
whichever worker answers it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess
from prometheus_client import values as _values
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Latency buckets for an API whose one-user answers take milliseconds and batches tens of them.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter(
    "streamflow_api_requests_total",
    "Requests answered, by endpoint (route template), method and status code.",
    ["endpoint", "method", "status"],
)
LATENCY = Histogram(
    "streamflow_api_request_seconds",
    "Time from a request's arrival to the end of its answer, by endpoint, method and status.",
    ["endpoint", "method", "status"],
    buckets=_BUCKETS,
)
ONLINE_READ = Histogram(
    "streamflow_online_read_seconds",
    "One read of Feast's online store (get_online_features for up to a chunk of users).",
    buckets=_BUCKETS,
)
CHAMPION = Gauge(
    "streamflow_champion_info",
    "1 for the champion model version /predict serves (label `version`), 0 for earlier ones.",
    ["version"],
    multiprocess_mode="max",
)


class RequestMetrics:
    """ASGI middleware counting and timing every HTTP request by its route's path template."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            # Unmatched paths share one series: a scan of random URLs must not grow the metrics.
            endpoint = getattr(route, "path", None) or "unmatched"
            labels = (endpoint, scope["method"], str(status))
            REQUESTS.labels(*labels).inc()
            LATENCY.labels(*labels).observe(time.perf_counter() - started)


@contextmanager
def timed_online_read() -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        ONLINE_READ.observe(time.perf_counter() - started)


_served: str | None = None


def serving_champion(version: str | None) -> None:
    """Record the champion version now served (None: no champion)."""
    global _served
    if version == _served:
        return
    if _served is not None:
        CHAMPION.labels(_served).set(0)
    if version is not None:
        CHAMPION.labels(version).set(1)
    _served = version


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, summed over the workers' files when samples go to
    files (prometheus_client decided that when it was first imported, from the environment)."""
    if _values.ValueClass is _values.MutexValue:  # samples in this process's memory
        registry = REGISTRY
    else:
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST
