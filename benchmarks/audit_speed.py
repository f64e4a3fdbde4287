"""Audit speed and memory on a Mistral-7B-shaped adapter (figures, not a pass/fail test).

32 layers x q,k,v,o = 128 modules of 4096 x 4096 at r=64, bf16 (about 128 MiB), written with
safetensors. Prints: the audit's wall time in process, the whole `gradience-hub audit --json`
process time and its peak RSS, `gradience-hub --help` time, and a dense SVD of 2 modules
extrapolated to 128.

Targets on 2 cores: process <= 1.0 s, in process <= 0.5 s and within 2x of the arithmetic
(printed beside it), peak RSS <= 400 MB, >= 1000x faster than the dense path, --help <= 0.3 s.
benchmarks/compare.py runs the same adapter through gradience 0.11 side by side.

The arithmetic is measured, not estimated from a formula: every module's reading, Gram
products, Choleskys and core SVD (``_kernel``) on one thread per core as the audit runs them,
with the SHA-256 of the weights beside them, interleaved with the audit's own rounds; the
perfect-scaling floor (one core's time divided by the cores) is printed beside it.

    python benchmarks/audit_speed.py [--dir DIR] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from gradience_hub.parallel import keep_freed_memory

LAYERS, D, R = 32, 4096, 64
PROJS = ("q_proj", "k_proj", "v_proj", "o_proj")


def write_mistral_shaped(directory: Path, seed: int = 0) -> Path:
    """Write the benchmark adapter once (A kaiming-like, B with a decaying spectrum)."""
    from safetensors.numpy import save_file

    if (directory / "adapter_model.safetensors").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    decay = np.geomspace(1.0, 1e-3, R).astype(np.float32)
    tensors = {}
    for i in range(LAYERS):
        for proj in PROJS:
            name = f"base_model.model.model.layers.{i}.self_attn.{proj}"
            A = rng.standard_normal((R, D), dtype=np.float32) / np.sqrt(D)
            B = rng.standard_normal((D, R), dtype=np.float32) * decay * 0.01
            tensors[f"{name}.lora_A.weight"] = A.astype(ml_dtypes.bfloat16)
            tensors[f"{name}.lora_B.weight"] = B.astype(ml_dtypes.bfloat16)
    save_file(tensors, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA",
        "r": R,
        "lora_alpha": 16,
        "target_modules": list(PROJS),
        "base_model_name_or_path": "mistralai/Mistral-7B-v0.1",
        "task_type": "CAUSAL_LM",
    }
    (directory / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return directory


@dataclass
class Best:
    """The best (smallest) of each figure over interleaved rounds: the machine's speed drifts
    between runs (BLAS throughput moved by a third within a day here), so every figure of one
    ratio is taken in the same rounds."""

    times: dict[str, float] = field(default_factory=dict)

    def add(self, label: str, seconds: float) -> None:
        self.times[label] = min(seconds, self.times.get(label, math.inf))

    def __getitem__(self, label: str) -> float:
        return self.times[label]


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _kernel(f: Any, name: str) -> np.ndarray:
    """The arithmetic of one module and nothing else: its bf16 factors read and widened to
    float64, their two Gram products (``B^T B``, ``A A^T``), a Cholesky of each and the
    singular values of the ``r x r`` core ``R_B R_A^T``."""
    A = f.get(f"{name}.lora_A.weight").astype(np.float64)
    B = f.get(f"{name}.lora_B.weight").astype(np.float64)
    core = np.linalg.cholesky(B.T @ B).T @ np.linalg.cholesky(A @ A.T)
    return np.linalg.svd(core, compute_uv=False)


def measure(directory: Path, repeat: int) -> Best:
    """In interleaved rounds: the audit in process (as the ``audit`` command runs it, and with
    the content hash replaced by a constant: the benchmark's own patch, the audit always
    hashes), and the arithmetic alone: every module's :func:`_kernel` on one core, on one
    thread per core (single-threaded BLAS, as the audit runs), and so with the SHA-256 of the
    weights file on a thread beside it (the hash every audit computes to name its bytes)."""
    from concurrent.futures import ThreadPoolExecutor
    from unittest import mock

    from threadpoolctl import threadpool_limits

    import gradience_hub.audit.run as audit_run
    from gradience_hub.adapter.safetensors_io import SafetensorsFile
    from gradience_hub.identity import file_sha256

    weights = directory / "adapter_model.safetensors"
    f = SafetensorsFile(weights)
    names = sorted({key.rsplit(".lora_", 1)[0] for key in f.names()})
    cores = os.cpu_count() or 1
    unhashed = mock.patch.object(audit_run, "adapter_content_sha256", lambda adapter: "0" * 64)

    def on_cores(hashed: bool) -> None:
        with threadpool_limits(1), ThreadPoolExecutor(cores + 1) as pool:
            sha = pool.submit(file_sha256, weights) if hashed else None
            with ThreadPoolExecutor(cores) as workers:
                list(workers.map(lambda name: _kernel(f, name), names))
            if sha is not None:
                sha.result()

    def one_core() -> None:
        with threadpool_limits(1):
            for name in names:
                _kernel(f, name)

    best = Best()
    audit_run.run_audit(str(directory))  # warm the page cache and imports
    for _ in range(repeat):
        best.add("audit", _timed(lambda: audit_run.run_audit(str(directory))))
        with unhashed:
            best.add("audit, no hash", _timed(lambda: audit_run.run_audit(str(directory))))
        best.add("arithmetic + hash", _timed(lambda: on_cores(True)))
        best.add("arithmetic", _timed(lambda: on_cores(False)))
        best.add("one core", _timed(one_core))
        best.add("sha", _timed(lambda: file_sha256(weights)))
    return best


def gram_gflops(directory: Path, repeat: int = 20) -> float:
    """This core's speed on one module's Gram products (float64, single-threaded BLAS), in
    GFLOP/s counted as 2 d r^2 per product (numpy computes the symmetric product, half that)."""
    from threadpoolctl import threadpool_limits

    from gradience_hub.adapter.safetensors_io import SafetensorsFile

    f = SafetensorsFile(directory / "adapter_model.safetensors")
    name = "base_model.model.model.layers.0.self_attn.q_proj"
    A = f.get(f"{name}.lora_A.weight").astype(np.float64)
    B = f.get(f"{name}.lora_B.weight").astype(np.float64)
    with threadpool_limits(1):
        seconds = min(_timed(lambda: (B.T @ B, A @ A.T)) for _ in range(repeat))
    return 2 * (2 * D * R * R) / seconds / 1e9


# Runs the command as a child of this small interpreter and reports its wall time, peak RSS
# (KiB) and exit code. Linux copies a process's RSS high-water mark into a forked (or vforked)
# child and keeps it across exec, so a child of the benchmark itself would report at least the
# benchmark's own peak (92 MB for an audit that peaks at 67 MB); a child of a fresh, small
# interpreter starts from that interpreter's few MB, as under GNU time.
_LAUNCHER = """
import os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.execvpe(sys.argv[1], sys.argv[1:], os.environ)
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - started, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def spawned(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int]:
    """Wall time (s), peak RSS (MB) and exit code of one fresh process ``cmd`` (its stdout
    discarded), measured from a small launcher process (see ``_LAUNCHER``)."""
    launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, *cmd]
    done = subprocess.run(launcher, env=env, stdout=subprocess.PIPE, check=True, text=True)
    seconds, rss_kib, code = done.stdout.split()
    return float(seconds), int(rss_kib) / 1024, int(code)


def whole_process(args: list[str], repeat: int) -> tuple[float, float]:
    """Best wall time of a fresh `gradience-hub ...` process and the peak RSS (MB) seen."""
    exe = [sys.executable, "-m", "gradience_hub", *args]
    times, rss = [], 0.0
    for _ in range(repeat):
        seconds, peak, code = spawned(exe)
        if code:
            raise SystemExit(f"{' '.join(exe)} exited {code}")
        times.append(seconds)
        rss = max(rss, peak)
    return min(times), rss


def dense_two_modules(directory: Path) -> float:
    from safetensors import safe_open

    t = time.perf_counter()
    with safe_open(str(directory / "adapter_model.safetensors"), framework="numpy") as f:
        for proj in PROJS[:2]:
            name = f"base_model.model.model.layers.0.self_attn.{proj}"
            A = f.get_tensor(f"{name}.lora_A.weight").astype(np.float64)
            B = f.get_tensor(f"{name}.lora_B.weight").astype(np.float64)
            np.linalg.svd((16 / R) * B @ A, compute_uv=False)
    return (time.perf_counter() - t) / 2 * LAYERS * len(PROJS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "gh-bench-7b")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-dense", action="store_true")
    args = parser.parse_args()
    # What the `audit` command does at its entry (gradience_hub.parallel): without it every
    # fresh 1-2 MB array costs page faults, in the audit and in the arithmetic alike.
    keep_freed_memory()
    directory = write_mistral_shaped(args.dir)
    size = (directory / "adapter_model.safetensors").stat().st_size / 2**20
    cores = os.cpu_count() or 1
    print(
        f"adapter: {LAYERS * len(PROJS)} modules {D}x{D} r={R} bf16, {size:.0f} MiB, "
        f"{cores} cores, Gram products at {gram_gflops(directory):.1f} GFLOP/s per core"
    )
    best = measure(directory, args.repeat)
    audit_s, bare_s = best["audit"], best["audit, no hash"]
    print(f"audit in process:                 {audit_s:.3f} s   (target <= 0.5 s)")
    print(
        f"the arithmetic on {cores} cores:        {best['arithmetic + hash']:.3f} s   (every "
        "module read and widened, its 2 Gram products, 2 Choleskys and r x r SVD, one thread per "
        f"core, with the SHA-256 of the weights beside it: in process = "
        f"{audit_s / best['arithmetic + hash']:.2f}x it, target <= 2x)"
    )
    print(
        f"  the same without the SHA-256:    {best['arithmetic']:.3f} s   (the audit with its "
        f"hash left out, {bare_s:.3f} s = {bare_s / best['arithmetic']:.2f}x it)"
    )
    floor_s = best["one core"] / cores
    print(
        f"  perfect-scaling floor:           {floor_s:.3f} s   (the arithmetic on one core, "
        f"{best['one core']:.3f} s, divided by {cores}; the cores do not reach it together: "
        f"the arithmetic alone is {best['arithmetic'] / floor_s:.2f}x it; in process = "
        f"{audit_s / floor_s:.2f}x it, {bare_s / floor_s:.2f}x without the hash)"
    )
    print(
        f"  SHA-256 of the weights, 1 core:  {best['sha']:.3f} s   (every audit names the bytes "
        "it read, on a thread beside the modules)"
    )
    proc_s, rss = whole_process(["audit", str(directory), "--json"], args.repeat)
    print(f"gradience-hub audit --json:       {proc_s:.3f} s   (target <= 1.0 s)")
    print(f"peak RSS of that process:         {rss:.0f} MB    (target <= 400 MB)")
    help_s, _ = whole_process(["--help"], args.repeat)
    print(f"gradience-hub --help:             {help_s:.3f} s   (target <= 0.3 s)")
    if not args.skip_dense:
        dense_s = dense_two_modules(directory)
        print(f"dense SVD path, 128 modules:      {dense_s:.0f} s (2 measured, extrapolated)")
        print(f"speed-up over the dense path:     {dense_s / audit_s:.0f}x (target >= 1000x)")


if __name__ == "__main__":
    main()
