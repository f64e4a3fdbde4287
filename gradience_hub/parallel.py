"""Module-level parallelism for the per-module linear algebra of audit and compress.

A LoRA module's math is a few BLAS-3 products of ``n x r`` factors with ``r x r`` results
(``r`` = 8 to 64). OpenBLAS splits each such product over every core and spends more time
synchronising than computing: on a 2-core machine one thread runs a ``4096 x 64`` Gram product
several times faster than two do, and far faster still when another process holds a core.
So the modules are spread over one thread per core (numpy releases the GIL in BLAS, LAPACK and
its array loops) and BLAS runs single-threaded while they do (:func:`single_threaded_blas`).

The BLAS thread count is process-wide state, and ``serve``'s worker threads reach
:func:`map_ordered` concurrently: each entering thread would save "the original" count, and
one that saved another's ``1`` would restore ``1`` for good. So the limit is reference-counted
under one lock: the first user sets it, the last one to leave restores what the first saw.

Each module also allocates a few fresh 1-2 MB arrays. glibc hands blocks that size back to the
kernel when they are freed (``mmap``, or trimming a thread's heap), so every module paid ~2,000
page faults for memory it had just released: measured on the 7B-shaped benchmark, 260,000 faults
and a second of system time in a 1.8 s compress. Keeping freed memory is an allocator setting
of the whole process, which a library must not change behind its caller (glibc has no way to
read a setting back, so it cannot even be restored faithfully: setting the mmap threshold turns
glibc's dynamic threshold off for good). So library calls never touch it; a program opts in
once at its entry point with :func:`keep_freed_memory` (the ``audit`` and ``compress``
commands do).
"""

from __future__ import annotations

import contextvars
import ctypes
import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# At most this many threads: beyond it the modules in flight cost memory, not time.
_MAX_WORKERS = 8

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# The largest mmap threshold glibc accepts on 64-bit (32 MiB); freed memory above the trim
# threshold (256 MiB, a few hundred modules in flight) still goes back to the kernel.
_KEEP_MMAP, _KEEP_TRIM = 32 * 1024 * 1024, 256 * 1024 * 1024

_allocator_lock = threading.Lock()
_allocator_tuned = False

# The shared single-threaded BLAS limit: how many callers are inside, and the limiter the
# first one entered (its restore puts back the counts that caller saw).
_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter: Any = None


def keep_freed_memory() -> bool:
    """Make glibc keep freed blocks of up to 32 MiB for reuse, for the rest of the process.

    Process-wide and never undone: call it once from a program's entry point (the CLI's
    ``audit`` and ``compress`` commands), never from library code. Returns whether the
    setting was applied (False where the C library is not glibc, e.g. musl or Windows).
    Calling it again does nothing.
    """
    global _allocator_tuned
    with _allocator_lock:
        if _allocator_tuned:
            return True
        try:
            libc = ctypes.CDLL(None)
            mallopt = libc.mallopt
        except (OSError, AttributeError, TypeError):  # not glibc (Windows: no CDLL(None))
            return False
        # mallopt returns 1 on success; musl has no mallopt symbol at all.
        ok = bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_MMAP)) and bool(
            mallopt(_M_TRIM_THRESHOLD, _KEEP_TRIM)
        )
        _allocator_tuned = ok
        return ok


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS runs single-threaded while any caller is inside; the count the first caller saw
    is restored when the last one leaves (safe when several threads enter and leave in any
    order)."""
    global _blas_users, _blas_limiter
    from threadpoolctl import threadpool_limits

    with _blas_lock:
        if _blas_users == 0:
            _blas_limiter = threadpool_limits(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                limiter, _blas_limiter = _blas_limiter, None
                limiter.restore_original_limits()


@contextmanager
def meanwhile(work: Callable[[], T], name: str) -> Iterator[Future[T]]:
    """Run ``work`` on a thread (in a copy of the caller's context) while the body runs, and
    yield the :class:`~concurrent.futures.Future` of its result or error.

    The thread is joined before the body's result or error leaves the block, and is not a
    daemon: a process that exited while a daemon thread was still inside matplotlib's C++
    extension aborted ("terminate called without an active exception"). An error of ``work``
    stays in the future: a caller that never reads it meets it again where it does the work
    itself (annotate's imports and templates ahead of their first use)."""
    future: Future[T] = Future()
    future.set_running_or_notify_cancel()
    context = contextvars.copy_context()

    def run() -> None:
        try:
            future.set_result(context.run(work))
        except BaseException as exc:
            future.set_exception(exc)

    thread = threading.Thread(target=run, name=name)
    thread.start()
    try:
        yield future
    finally:
        thread.join()


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def map_ordered(
    fn: Callable[[T], R], items: Iterable[T], *, workers: int | None = None
) -> Generator[R, None, None]:
    """``fn`` over ``items`` on one thread per core with single-threaded BLAS, in order.

    Yields results in the order of ``items``; at most two items per thread are in flight, so
    memory stays that of a few modules. An exception raised by ``fn`` is raised here, for the
    first failing item in order, and the items not yet started are dropped. With one core (or
    ``workers=1``) it is the plain serial loop with the BLAS threads left as they are. No
    allocator setting is changed (see the module docstring).
    """
    n = min(workers or available_cores(), _MAX_WORKERS)
    if n <= 1:
        yield from map(fn, items)
        return
    source = iter(items)
    pending: deque[Future[R]] = deque()
    with single_threaded_blas(), ThreadPoolExecutor(n) as pool:
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
