"""Import-time budgets of the two commands users run most, measured with ``python -X importtime``
so the check is about what we import, not how fast the machine is today.

A dependency that turns slow arrives through a lock refresh without any of our code changing
(ml_dtypes 0.7.0 took 0.7-1.6 s to import, more than the rest of an audit): these tests fail
when one does, naming the modules, instead of a benchmark noticing weeks later.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.factories import llama_like_adapter

# Never imported by `--help` or by the audit of a local adapter: each is heavy, and none is
# needed there (torch & co. for the bench, scipy for records, matplotlib for pictures).
HEAVY = (
    "torch",
    "transformers",
    "peft",
    "scipy",
    "matplotlib",
    "ml_dtypes",
    "pandas",
    "pyarrow",
    "huggingface_hub",
    "jinja2",
)

# Runs per profile: import times are short (~0.1 s each), so the least of a few is cheap.
RUNS = 5


def _one_profile(argv: list[str], pycache: str) -> list[tuple[int, int, str]]:
    """One run of ``python -X importtime ARGV``, its bytecode cached under PYCACHE."""
    # An installed package is imported from bytecode that pip compiled at install. A fresh
    # clone with PYTHONDONTWRITEBYTECODE=1 (CI's environment and this machine's) would compile
    # every module of ours from source on every run instead: ~2x the cost, and not a user's.
    # A private cache keeps the checkout untouched and works on a read-only tree.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = pycache
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            own, cumulative, name = line[len("import time:") :].split("|")
            if own.strip().isdigit():
                rows.append((int(own), int(cumulative), name.strip()))
    assert rows, "no -X importtime output"
    return rows


def import_profile(
    *args: str, runs: int = RUNS, argv: list[str] | None = None
) -> list[tuple[int, int, str]]:
    """(self µs, cumulative µs, module) of every import of ``gradience-hub ARGS`` (or of
    ``python ARGV``), each time the least of ``runs`` runs, as timeit reports: the suite runs
    on two workers, and a run that loses its core for a moment charges the pause to whichever
    module was importing. Every run imports compiled bytecode, as an installed package does:
    one uncounted run first compiles it into a private cache."""
    argv = argv or ["-m", "gradience_hub", *args]
    best: dict[str, tuple[int, int]] = {}
    with tempfile.TemporaryDirectory(prefix="pycache-") as pycache:
        _one_profile(argv, pycache)
        for _ in range(runs):
            # by name, not position: the audit's worker threads may import in another order
            for own, cumulative, name in _one_profile(argv, pycache):
                was = best.get(name, (own, cumulative))
                best[name] = (min(own, was[0]), min(cumulative, was[1]))
    return [(own, cumulative, name) for name, (own, cumulative) in best.items()]


def _top(name: str) -> str:
    return name.split(".")[0]


def _heavy(rows: list[tuple[int, int, str]]) -> list[str]:
    return sorted({_top(n) for _, _, n in rows if _top(n) in HEAVY})


def _beyond_stdlib_and_numpy(rows: list[tuple[int, int, str]]) -> list[tuple[int, str]]:
    """(self µs, module) of everything but the standard library and numpy: our modules and
    every other dependency."""
    std = set(sys.stdlib_module_names)
    return [(own, n) for own, _, n in rows if _top(n) not in std and _top(n) != "numpy"]


def test_help_imports_no_numpy_and_little_else() -> None:
    rows = import_profile("--help")
    assert _heavy(rows) == []
    assert "numpy" not in {_top(n) for _, _, n in rows}
    spent = sum(own for own, _ in _beyond_stdlib_and_numpy(rows))
    # click and our CLI modules: ~30 ms on a loaded 2-core machine
    assert spent < 300_000, f"gradience-hub --help spends {spent / 1e6:.2f} s importing"


def _assert_within_budget(rows: list[tuple[int, int, str]], what: str) -> None:
    """Nothing heavy, and everything beyond the stdlib and numpy under twice numpy's import:
    relative to numpy's own import in the same process, so a slow or loaded machine scales
    both (ours and the rest cost ~0.9x numpy's today on an idle machine, ~0.45x with three
    busy loops beside it, and ~1.9x if compiled from source each run; ml_dtypes 0.7 alone is
    ~10x)."""
    assert _heavy(rows) == [], f"{what} imports heavy modules"
    _assert_time_budget(rows, what)


def _assert_time_budget(rows: list[tuple[int, int, str]], what: str) -> None:
    numpy = max(cumulative for _, cumulative, n in rows if n == "numpy")
    counted = _beyond_stdlib_and_numpy(rows)
    spent = sum(own for own, _ in counted)
    assert spent < 2 * numpy, (
        f"{what} spends {spent / 1e6:.2f} s importing beyond numpy's {numpy / 1e6:.2f} s: "
        + ", ".join(f"{n} {own / 1e6:.3f}s" for own, n in sorted(counted, reverse=True)[:5])
    )


def test_the_audit_imports_within_its_budget(tmp_path: Path) -> None:
    adapter = llama_like_adapter(tmp_path / "adapter", n_layers=2, d=32, r=8)
    rows = import_profile("audit", str(adapter), "--json")
    _assert_within_budget(rows, "the audit")


def test_compress_imports_within_the_same_budget(tmp_path: Path) -> None:
    """compress reads and writes bf16 without ml_dtypes and loads neither the audit's report
    and record modules nor anything heavy (the default --verify self: no peft reload)."""
    adapter = llama_like_adapter(tmp_path / "adapter", n_layers=2, d=32, r=8)
    out = tmp_path / "out"
    rows = import_profile(
        "compress", str(adapter), "-o", str(out), "--force", "--rank", "4", "--verify", "self"
    )
    _assert_within_budget(rows, "compress")
    assert not {
        n for _, _, n in rows if n.startswith(("gradience_hub.record", "gradience_hub.audit"))
    }


def test_the_old_bf16_path_would_fail_the_budget(tmp_path: Path) -> None:
    """The check itself: the audit as it was (ml_dtypes imported to read bf16) is caught,
    both as a heavy module and by the time budget (~10x numpy's import here)."""
    adapter = llama_like_adapter(tmp_path / "adapter", n_layers=2, d=32, r=8)
    code = (
        "import sys, runpy, ml_dtypes; sys.argv = ['gradience-hub', 'audit', sys.argv[1], "
        "'--json']; runpy.run_module('gradience_hub', run_name='__main__')"
    )
    rows = import_profile(runs=1, argv=["-c", code, str(adapter)])
    assert _heavy(rows) == ["ml_dtypes"]
    with pytest.raises(AssertionError, match=r"the audit spends .* ml_dtypes"):
        _assert_time_budget(rows, "the audit")
