"""Shared by the thread-safety tests: start N workers together and collect what they raised."""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_together(count: int, work: Callable[[int], None]) -> list[BaseException]:
    """Run ``work(k)`` for k in 0..count-1 on as many threads, released at once; the exceptions raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def worker(k: int) -> None:
        try:
            start.wait()
            work(k)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors
