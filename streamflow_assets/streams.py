"""Iterators produced by a thread of their own, so that producing and consuming overlap."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Generator, Iterator
from queue import Full, Queue
from typing import TypeVar

T = TypeVar("T")


def read_ahead(items: Generator[T, None, None], name: str, depth: int = 2) -> Iterator[T]:
    """`items`, produced by a thread named `name` up to `depth` ahead of the reader. The
    reader gets the producer's error where it would have; stopping early closes `items` in
    their thread (ending, say, their query)."""
    queue: Queue = Queue(depth)
    stop = threading.Event()
    end = object()

    def put(item: object) -> bool:
        """Queue an item unless the reader has stopped; whether it was queued."""
        while not stop.is_set():
            with contextlib.suppress(Full):
                queue.put(item, timeout=0.1)
                return True
        return False

    def produce() -> None:
        try:
            if all(put(item) for item in items):
                put(end)
        except BaseException as error:  # handed to the reader, raised there
            put(error)
        finally:
            items.close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while (item := queue.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
