"""Named points at which the fault suite kills a run, the way FoundationDB and TiKV test crash
recovery: with `STREAMFLOW_FAILPOINT=<name>` in its environment, the process SIGKILLs itself
(nothing runs after: no `finally`, no rollback by Python, sockets closed by the kernel) when it
reaches that point. Unset, a failpoint costs one environment lookup.

The points are the stages of a month's two writes that leave something behind: the live tables
(`ingest.*`) and the online store (`online.*`). `streamflow bench faults` and
`streamflow_assets_tests/test_faults.py` kill a run at each and check what it left and that the
next run heals it.
"""

from __future__ import annotations

import os
import signal

FAILPOINTS = {
    "ingest.staged": "every drop file copied into staging, not yet validated",
    "ingest.validated": "the drop validated, the next live tables not yet built",
    "ingest.built": "the next live tables built beside the live ones, not yet swapped in",
    "ingest.swapping": "inside the swap transaction, some live tables swapped",
    "ingest.published": "the swap committed, nothing after it done",
    "online.staged": "every feature view's next online table built, none swapped in",
    "online.swapping": "inside the publish transaction, between two feature views' swaps",
    "online.published": "the month published online, its interval not yet in the registry",
}
ENV = "STREAMFLOW_FAILPOINT"


def failpoint(name: str) -> None:
    """Kill this process here if the environment names this point."""
    if name not in FAILPOINTS:
        raise ValueError(f"unknown failpoint {name!r}")
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
