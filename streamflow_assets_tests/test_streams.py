"""Iterators produced by a thread of their own."""

from __future__ import annotations

import threading

import psycopg
import pyarrow as pa
import pytest

from streamflow_assets.streams import read_ahead


def test_blocks_read_ahead_arrive_in_order_with_the_producers_error_and_stop_their_query():
    """A producer (the training query, the month's scoring) runs in a thread of its own, ahead
    of its reader: its items come in order, its error comes where it happened, and a reader
    that stops early ends it (its generator is closed in its thread, which ends)."""
    closed = []

    def blocks(fail_after=None):
        try:
            for i in range(10):
                if i == fail_after:
                    raise psycopg.errors.QueryCanceled("canceling statement due to user request")
                yield pa.table({"i": [i]})
        finally:
            closed.append(threading.current_thread().name)

    assert [b["i"][0].as_py() for b in read_ahead(blocks(), name="producer")] == list(range(10))
    got = []
    with pytest.raises(psycopg.errors.QueryCanceled, match="canceling statement"):
        for block in read_ahead(blocks(fail_after=3), name="producer"):
            got.append(block["i"][0].as_py())
    assert got == [0, 1, 2]
    reader = read_ahead(blocks(), name="producer", depth=1)
    assert next(reader)["i"][0].as_py() == 0
    reader.close()
    assert closed == ["producer"] * 3
    assert not [t for t in threading.enumerate() if t.name == "producer"]
