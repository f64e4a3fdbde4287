"""Module-level parallelism for the per-module linear algebra of audit and compress.

A LoRA module's math is a few BLAS-3 products of ``n x r`` factors with ``r x r`` results
(``r`` = 8 to 64). OpenBLAS splits each such product over every core and spends more time
synchronising than computing: on a 2-core machine one thread runs a ``4096 x 64`` Gram product
several times faster than two do, and far faster still when another process holds a core.
So the modules are spread over one thread per core (numpy releases the GIL in BLAS, LAPACK and
its array loops) and each BLAS call runs single-threaded, restored afterwards.

Each module also allocates a few fresh 1-2 MB arrays. glibc hands blocks that size back to the
kernel when they are freed (``mmap``, or trimming a thread's heap), so every module paid ~2,000
page faults for memory it had just released: measured on the 7B-shaped benchmark, 260,000 faults
and a second of system time in a 1.8 s compress. While the modules run, freed memory is kept for
reuse (glibc's ``mallopt``; other C libraries are left alone) and handed back at the end.
"""

from __future__ import annotations

import ctypes
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

# At most this many threads: beyond it the modules in flight cost memory, not time.
_MAX_WORKERS = 8


# glibc's mallopt parameters (malloc.h) and its defaults, restored afterwards.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_DEFAULT_THRESHOLD = 128 * 1024
# The largest mmap threshold glibc accepts on 64-bit (32 MiB); freed memory above the trim
# threshold (256 MiB, a few hundred modules in flight) still goes back to the kernel.
_KEEP_MMAP, _KEEP_TRIM = 32 * 1024 * 1024, 256 * 1024 * 1024


@contextmanager
def _freed_memory_kept() -> Iterator[None]:
    """Keep freed blocks in the process's heaps while the body runs (see the module doc)."""
    try:
        libc = ctypes.CDLL(None)
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc (Windows: no CDLL(None))
        yield
        return
    mallopt(_M_MMAP_THRESHOLD, _KEEP_MMAP)
    mallopt(_M_TRIM_THRESHOLD, _KEEP_TRIM)
    try:
        yield
    finally:
        mallopt(_M_TRIM_THRESHOLD, _DEFAULT_THRESHOLD)
        mallopt(_M_MMAP_THRESHOLD, _DEFAULT_THRESHOLD)
        malloc_trim(0)


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def map_ordered(
    fn: Callable[[T], R], items: Iterable[T], *, workers: int | None = None
) -> Iterator[R]:
    """``fn`` over ``items`` on one thread per core with single-threaded BLAS, in order.

    Yields results in the order of ``items``; at most two items per thread are in flight, so
    memory stays that of a few modules. An exception raised by ``fn`` is raised here, for the
    first failing item in order, and the items not yet started are dropped. With one core (or
    ``workers=1``) it is the plain serial loop with the BLAS threads left as they are.
    """
    n = min(workers or available_cores(), _MAX_WORKERS)
    if n <= 1:
        with _freed_memory_kept():
            yield from map(fn, items)
        return
    from threadpoolctl import threadpool_limits

    source = iter(items)
    pending: deque[Future[R]] = deque()
    with (
        _freed_memory_kept(),
        threadpool_limits(limits=1, user_api="blas"),
        ThreadPoolExecutor(n) as pool,
    ):
        try:
            for item in source:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 2 * n:
                    break
            while pending:
                result = pending.popleft().result()
                for item in source:
                    pending.append(pool.submit(fn, item))
                    break
                yield result
        finally:
            for future in pending:
                future.cancel()
