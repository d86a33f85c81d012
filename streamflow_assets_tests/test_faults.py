"""The fault suite: a month's run SIGKILLed at each stage leaves a whole state (every part as
before the run, or as after a clean one, never half of each), and the next run heals it."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy.engine import URL

from streamflow_assets.failpoints import FAILPOINTS, failpoint
from streamflow_bench.faults import (
    NEW_AFTER_KILL,
    PARTS,
    FaultOutcome,
    database,
    fault_scenarios,
    fingerprint,
    run_month,
)

MONTHS = ("2024-01", "2024-02")


@pytest.fixture(scope="module")
def outcomes(server_url: URL, seed_drops) -> dict[str, FaultOutcome]:
    prefix = f"sf_faults_{uuid.uuid4().hex[:8]}"
    return {o.failpoint: o for o in fault_scenarios(server_url, seed_drops, MONTHS, prefix=prefix)}


@pytest.mark.parametrize("point", list(FAILPOINTS))
def test_a_run_killed_at_each_stage_leaves_a_whole_state_and_the_next_run_heals_it(outcomes, point):
    outcome = outcomes[point]
    assert outcome.killed.killed, outcome.killed.output[-3000:]
    assert outcome.left == {
        part: "new" if part in NEW_AFTER_KILL[point] else "as before" for part in PARTS
    }
    assert outcome.healed, outcome.heal.output[-3000:]
    assert outcome.dead_run_marked_failed
    assert outcome.problems == []


def test_the_kills_left_staging_tables_for_the_next_run_to_clear(outcomes):
    # Otherwise the suite would not show that the re-run clears them.
    for point in ("ingest.staged", "ingest.validated", "ingest.built", "online.staged"):
        assert outcomes[point].leftovers, point
    assert outcomes["online.published"].leftovers == []


def test_two_months_run_at_once_end_as_one_after_the_other(server_url, seed_drops, tmp_path):
    prefix = f"sf_faults_{uuid.uuid4().hex[:8]}"
    with (
        database(server_url, f"{prefix}_one_by_one") as one_by_one,
        database(server_url, f"{prefix}_at_once") as at_once,
    ):
        for month in MONTHS:
            run = run_month(one_by_one, seed_drops, tmp_path / "one_by_one", MONTHS, month)
            assert run.returncode == 0, run.output[-3000:]
        with ThreadPoolExecutor(len(MONTHS)) as pool:
            runs = list(
                pool.map(lambda m: run_month(at_once, seed_drops, tmp_path / m, MONTHS, m), MONTHS)
            )
        for run in runs:
            assert run.returncode == 0, run.output[-3000:]
        assert fingerprint(at_once) == fingerprint(one_by_one)
        assert fingerprint(at_once)["online store"]["months published"].startswith("2 rows")


def test_an_unknown_failpoint_is_refused_by_name():
    with pytest.raises(ValueError, match=r"unknown failpoint 'ingest\.stagd'"):
        failpoint("ingest.stagd")
