"""Other libraries' warnings and logs we know and accept, silenced in one place.

The CLI, the API and the code location (so every run, whoever launches it) call `silence()`; any
warning not listed here still shows. Each entry says why it is safe to ignore.
"""

from __future__ import annotations

import logging
import os
import re
import warnings

KNOWN_WARNINGS: dict[str, str] = {
    r"On demand feature view is an experimental feature": "Feast: the derived features are two "
    "small on-demand views, and online_matches_offline checks them against the training path "
    "every month.",
    r"Parameter `allow_nonexistent_upstream_partitions` .* is currently in beta": "Dagster: "
    "churn_model's training window reaches back before the first month; pinned Dagster version.",
    r"Function `build_(time_partition_freshness_checks|sensor_for_freshness_checks)` is "
    r"superseded": "Dagster: the online deadline is a time-partition freshness check; its "
    "successor (FreshnessPolicy) does not evaluate per-partition deadlines yet.",
    r".*partitions_def on an AssetCheckSpec": "Dagster: per-partition check results are a "
    "preview feature of the pinned version; the UI shows each month's results with it.",
}
"""Message pattern -> why it is accepted."""

KNOWN_LOG_MESSAGES: dict[tuple[str, str], str] = {
    ("psycopg", "error ignored terminating"): "psycopg logs it when a batch insert in pipeline "
    "mode fails and the error goes on to its caller: MLflow inserts a run's metrics that way and, "
    "when two have the same key, step and timestamp, catches the error and skips the duplicate.",
}
"""(logger, start of the message) -> why it is accepted."""

QUIET_LOGGERS = {"MLFLOW_LOGGING_LEVEL": "WARNING"}
"""MLflow logs every model version it registers and every table it creates at INFO; the run's
metadata already says which version was registered."""


_KNOWN = re.compile("|".join(f"(?:{pattern})" for pattern in KNOWN_WARNINGS))
_show = warnings.showwarning


def _show_unless_known(message, category, filename, lineno, file=None, line=None):
    if not _KNOWN.match(str(message)):
        _show(message, category, filename, lineno, file, line)


class _DropMessage(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


def silence() -> None:
    """Ignore the known warnings from here on in this process; MLflow's log level also holds for
    the processes it starts.

    Filters alone are not enough: importing Feast puts its own `once` filter for every
    RuntimeWarning in front of ours, so the known ones are also dropped where warnings are shown.
    """
    for pattern in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    if warnings.showwarning is _show:
        warnings.showwarning = _show_unless_known
    for logger, start in KNOWN_LOG_MESSAGES:
        known = logging.getLogger(logger)
        if not any(isinstance(f, _DropMessage) and f.start == start for f in known.filters):
            known.addFilter(_DropMessage(start))
    for variable, level in QUIET_LOGGERS.items():
        os.environ.setdefault(variable, level)
