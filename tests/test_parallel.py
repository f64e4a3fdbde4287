"""map_ordered: order, errors, bounded look-ahead, the BLAS thread count put back (also when
two threads use it at once), and no allocator setting changed by a library call (only the CLI's
own process opts in); meanwhile: work beside a block, joined before it is left."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from gradience_hub import parallel
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


_TWO_THREADS = """
import json, sys, threading
import numpy as np
sys.path.insert(0, {root!r})
from threadpoolctl import threadpool_info
from gradience_hub.parallel import map_ordered

def blas_threads():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

np.ones((2, 2)) @ np.ones((2, 2))
before = blas_threads()
a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
seen = {{}}

def a():
    try:
        stream = map_ordered(lambda _: blas_threads(), range(8), workers=2)
        seen["a"] = next(stream)
        a_in.set()
        b_in.wait(30)
        stream.close()  # A leaves while B is still inside
    finally:
        a_in.set()
        a_out.set()

def b():
    try:
        a_in.wait(30)
        stream = map_ordered(lambda _: blas_threads(), range(8), workers=2)
        seen["b"] = next(stream)
        b_in.set()
        a_out.wait(30)
        seen["b_after_a_left"] = next(stream)
        stream.close()
    finally:
        b_in.set()

threads = [threading.Thread(target=a), threading.Thread(target=b)]
for t in threads:
    t.start()
for t in threads:
    t.join(60)
print(json.dumps({{"before": before, "after": blas_threads(), **seen}}))
"""


def test_two_threads_overlapping_leave_the_blas_thread_count_as_it_was() -> None:
    """A enters, B enters, A leaves, B leaves (serve's workers, out of order): B still runs
    single-threaded after A left, and the count is the one from before A entered.

    In a fresh interpreter started with two BLAS threads, where only worker threads ever set
    the count: OpenBLAS ignores a count set from another thread once the main thread has set
    one (as this module's other tests do)."""
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, "-c", _TWO_THREADS.format(root=root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    before = seen.pop("before")
    assert before and all(n == 2 for n in before)
    ones = [1] * len(before)
    assert seen == {"after": before, "a": ones, "b": ones, "b_after_a_left": ones}


def test_blas_limit_nests_on_one_thread() -> None:
    np.ones((2, 2)) @ np.ones((2, 2))
    before = _blas_threads()
    with parallel.single_threaded_blas():
        with parallel.single_threaded_blas():
            assert _blas_threads() == [1] * len(before)
        assert _blas_threads() == [1] * len(before)  # the outer user is still inside
    assert _blas_threads() == before


# A fresh interpreter: whether glibc hands a block out by mmap (the IS_MMAPPED bit, 0x2, of
# the chunk's size word just below the pointer) shows its mmap threshold, which mallopt
# cannot read back. glibc's default threshold is dynamic: freeing an mmapped chunk raises it
# to that chunk's size; a mallopt call fixes it (and turns that off for good).
_PROBE = """
import ctypes, json, sys
import numpy as np
sys.path.insert(0, {root!r})
from gradience_hub import parallel

libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
MiB = 1 << 20

def mmapped(size):
    p = libc.malloc(size)
    flag = ctypes.c_size_t.from_address(p - 8).value & 2
    libc.free(p)
    return bool(flag)

{body}
"""


def _probe(body: str) -> list[bool]:
    root = str(Path(__file__).resolve().parent.parent)
    script = _PROBE.format(root=root, body=textwrap.dedent(body))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc")
def test_a_library_call_leaves_the_allocator_untouched() -> None:
    seen = _probe(
        """
        before = mmapped(20 * MiB)  # the default: above the (dynamic) threshold, so mmapped
        inside = parallel.map_ordered(lambda _: mmapped(24 * MiB), range(1), workers=2)
        inside = list(inside)[0]  # still the default while it runs: mmapped
        after = mmapped(28 * MiB)
        # the dynamic threshold is still on: 28 MiB was just freed, so 8 MiB is not mmapped
        # (a fixed threshold, mallopt's "restore" to 128 KiB, would mmap it)
        dynamic = not mmapped(8 * MiB)
        print(json.dumps([before, inside, after, dynamic]))
        """
    )
    assert seen == [True, True, True, True]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_the_cli_opt_in_keeps_freed_blocks_and_map_ordered_then_reuses_them() -> None:
    """keep_freed_memory (the CLI's audit and compress call it once) raises the threshold to
    32 MiB for the process; then 1-2 MiB arrays freed on worker threads are reused, not
    faulted in again (a plain thread pool faults ~50,000 pages here: thread heaps are
    trimmed)."""
    seen = _probe(
        """
        import resource
        assert parallel.keep_freed_memory() and parallel.keep_freed_memory()
        kept = not mmapped(30 * MiB)

        def churn(_):
            X = np.empty((4096, 64))  # 2 MiB
            X.fill(1.0)  # touch every page
            Y = np.full((4096, 64), 2.0)
            return float(X[-1, -1] + Y.astype(np.float32)[-1, -1])

        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        total = sum(parallel.map_ordered(churn, range(400), workers=2))
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start
        pages = 2 * MiB // 4096
        print(json.dumps([kept, total == 1200, faults < 20 * pages]))
        """
    )
    assert seen == [True, True, True]


def test_the_audit_and_compress_commands_opt_in_and_the_library_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gradience_hub.audit import run_audit
    from gradience_hub.cli import main
    from tests.factories import llama_like_adapter

    calls: list[str] = []

    def opt_in() -> bool:
        calls.append("opt-in")
        return True

    monkeypatch.setattr(parallel, "keep_freed_memory", opt_in)
    adapter = llama_like_adapter(tmp_path / "adapter", n_layers=2, d=16, r=4)
    run_audit(str(adapter))
    assert calls == []
    for argv in (["audit", str(adapter)], ["compress", str(adapter), "-o", str(tmp_path / "c")]):
        with pytest.raises(SystemExit) as code:
            main([*argv, "--json"] if argv[0] == "audit" else [*argv, "--rank", "2"])
        assert code.value.code == 0
    assert calls == ["opt-in", "opt-in"]


def test_meanwhile_runs_beside_the_body_in_the_callers_context_and_is_joined() -> None:
    import contextvars

    who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")
    who.set("the caller")
    started, release = threading.Event(), threading.Event()

    def work() -> tuple[str, str]:
        started.set()
        assert release.wait(10)  # still running while the body runs
        return who.get(), threading.current_thread().name

    with parallel.meanwhile(work, "gradience-test") as future:
        assert started.wait(10) and not future.done()
        thread = next(t for t in threading.enumerate() if t.name == "gradience-test")
        assert not thread.daemon
        release.set()
    assert not thread.is_alive()  # joined before the block was left
    assert future.result() == ("the caller", "gradience-test")


def test_meanwhile_keeps_the_works_error_for_whoever_reads_it() -> None:
    def work() -> None:
        raise KeyError("templates")

    with parallel.meanwhile(work, "gradience-test") as future:
        pass  # an error nobody asks for does not leave the block
    assert isinstance(future.exception(), KeyError)
    with pytest.raises(KeyError, match="templates"):
        future.result()
