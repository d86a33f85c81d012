"""What the domain reports back: check outcomes, metadata values, and the errors a step stops on.

Plain Python, so the work does not depend on the orchestrator; the Dagster layer turns these into
asset check results, metadata and failures (streamflow_assets/defs/common.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


class Markdown(str):
    """A metadata value to show as markdown (a table, a list)."""


@dataclass(frozen=True)
class CheckOutcome:
    """One check's result for one partition: stable name, pass/fail, and why."""

    name: str
    passed: bool
    description: str
    metadata: Mapping[str, object] = field(default_factory=dict)
    asset: str | None = None
    """The asset checked, for steps that produce several."""
    blocking: bool = True
    """A failed blocking check stops the step; any other is a warning."""


@dataclass
class StepResult:
    """What a step produced: its checks' outcomes and its metadata; `refused` when a blocking
    check failed and nothing was written (the checks are still reported)."""

    checks: list[CheckOutcome]
    metadata: dict[str, object] = field(default_factory=dict)
    refused: StepRefused | None = None


class MissingInputError(RuntimeError):
    """A step's input is not there yet; the message says what to materialize first."""


class OnlineStoreUnavailableError(RuntimeError):
    """The online store does not answer; the message says where, and which settings to fix."""


class StepRefused(RuntimeError):
    """A step's blocking checks failed and it wrote nothing; the message lists what failed."""

    def __init__(self, message: str, metadata: Mapping[str, object] | None = None):
        super().__init__(message)
        self.metadata = dict(metadata or {})


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> Markdown:
    """Rows as a markdown table, the way the UI shows previews."""
    lines = [columns, ["---"] * len(columns), *rows]
    return Markdown("\n".join("| " + " | ".join(map(str, line)) + " |" for line in lines))
