"""map_ordered: order, errors, bounded look-ahead, and the BLAS thread count put back."""

from __future__ import annotations

import platform
import resource
import threading
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from gradience_hub.parallel import map_ordered


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_results_come_in_input_order_from_several_threads() -> None:
    seen: set[str] = set()

    def slow_first(i: int) -> int:
        seen.add(threading.current_thread().name)
        time.sleep(0.05 if i == 0 else 0.0)
        return i * i

    assert list(map_ordered(slow_first, range(20), workers=2)) == [i * i for i in range(20)]
    assert len(seen) == 2


def test_the_first_failing_item_in_order_is_raised() -> None:
    def fail_on_odd(i: int) -> int:
        if i % 2:
            time.sleep(0.05 if i == 1 else 0.0)  # item 3 fails first in time
            raise ValueError(f"item {i}")
        return i

    results = []
    with pytest.raises(ValueError, match="item 1"):
        for value in map_ordered(fail_on_odd, range(10), workers=2):
            results.append(value)
    assert results == [0]


def test_look_ahead_is_bounded() -> None:
    started: list[int] = []

    def record(i: int) -> int:
        started.append(i)
        return i

    stream = map_ordered(record, range(100), workers=2)
    assert next(stream) == 0
    time.sleep(0.05)
    # two items per thread in flight, plus the one refilled after the first result
    assert len(started) <= 5
    stream.close()


def test_blas_runs_single_threaded_inside_and_is_restored_after() -> None:
    np.ones((2, 2)) @ np.ones((2, 2))  # numpy's OpenBLAS is loaded
    before = _blas_threads()
    assert before, "no BLAS library found by threadpoolctl"
    inside = list(map_ordered(lambda _: _blas_threads(), range(4), workers=2))
    assert all(threads == [1] * len(before) for threads in inside)
    assert _blas_threads() == before


def test_one_worker_is_the_serial_loop() -> None:
    names = list(map_ordered(lambda _: threading.current_thread().name, range(3), workers=1))
    assert names == [threading.current_thread().name] * 3


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_freed_blocks_are_reused_not_faulted_in_again() -> None:
    """Each item allocates and frees fresh 1-2 MiB arrays on a worker thread (as a module's
    factors do): inside map_ordered the freed blocks are reused, so their pages are not faulted
    in again (a plain thread pool faults ~50,000 pages here: thread heaps are trimmed)."""

    def churn(_: int) -> float:
        X = np.empty((4096, 64))  # 2 MiB, above glibc's default mmap threshold
        X.fill(1.0)  # touch every page
        Y = np.full((4096, 64), 2.0)
        return float(X[-1, -1] + Y.astype(np.float32)[-1, -1])

    pages = 2 * 1024 * 1024 // 4096
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    assert sum(map_ordered(churn, range(400), workers=2)) == 1200
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start
    assert faults < 20 * pages  # instead of ~100 * pages
