"""Audit speed and memory on a Mistral-7B-shaped adapter (figures, not a pass/fail test).

32 layers x q,k,v,o = 128 modules of 4096 x 4096 at r=64, bf16 (about 128 MiB), written with
safetensors. Prints: the audit's wall time in process, the whole `gradience-hub audit --json`
process time and its peak RSS, `gradience-hub --help` time, and a dense SVD of 2 modules
extrapolated to 128.

Targets on 2 cores: process <= 1.0 s, in process <= 0.5 s and within 2x of the arithmetic
(printed beside it), peak RSS <= 400 MB, >= 1000x faster than the dense path, --help <= 0.3 s.
benchmarks/compare.py runs the same adapter through gradience 0.11 side by side.

    python benchmarks/audit_speed.py [--dir DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ml_dtypes
import numpy as np

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


def in_process(directory: Path, repeat: int, hashed: bool = True) -> float:
    """Best wall time of ``run_audit`` in this process (warm). ``hashed=False`` replaces the
    adapter content hash by a constant, to set the spectral work alone against the arithmetic
    estimate (the benchmark's own patch; the audit always hashes)."""
    from unittest import mock

    import gradience_hub.audit.run as audit_run

    patch = mock.patch.object(audit_run, "adapter_content_sha256", lambda adapter: "0" * 64)
    with contextlib.nullcontext() if hashed else patch:
        audit_run.run_audit(str(directory))  # warm the page cache and imports
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            audit_run.run_audit(str(directory))
            times.append(time.perf_counter() - t)
    return min(times)


def whole_process(args: list[str], repeat: int) -> tuple[float, float]:
    """Best wall time of a fresh `gradience-hub ...` process and the peak RSS (MB) seen."""
    exe = [sys.executable, "-m", "gradience_hub", *args]
    times, rss = [], 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(exe, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
        # ru_maxrss of children is the largest peak among all waited-for children (KiB)
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return min(times), rss


def arithmetic_estimate(directory: Path, repeat: int = 20) -> tuple[float, float, float]:
    """The audit's unavoidable work on this machine: per module, the bf16 factors widened to
    float64, their two ``r x r`` Gram products (``B^T B`` and ``A A^T``, 2*d*r^2 flops each:
    the audit's QR is a Cholesky of these) and the ``r x r`` SVD of the core, timed on one
    core and divided over the cores (perfect scaling: a floor, not a forecast). Returns
    (seconds, GFLOP/s of one core, seconds of the SHA-256 of the weights file on one core:
    the content hash every audit computes, which is I/O-bound work beside the arithmetic)."""
    from threadpoolctl import threadpool_limits

    from gradience_hub.adapter.safetensors_io import SafetensorsFile
    from gradience_hub.identity import file_sha256

    f = SafetensorsFile(directory / "adapter_model.safetensors")
    name = "base_model.model.model.layers.0.self_attn.q_proj"
    with threadpool_limits(1):
        t = time.perf_counter()
        for _ in range(repeat):
            A = f.get(f"{name}.lora_A.weight").astype(np.float64)
            B = f.get(f"{name}.lora_B.weight").astype(np.float64)
        widen = (time.perf_counter() - t) / repeat
        t = time.perf_counter()
        for _ in range(repeat):
            G_B = B.T @ B
            G_A = A @ A.T
        gram = (time.perf_counter() - t) / repeat
        core = np.linalg.cholesky(G_B).T @ np.linalg.cholesky(G_A)
        t = time.perf_counter()
        for _ in range(repeat):
            np.linalg.svd(core, compute_uv=False)
        svd = (time.perf_counter() - t) / repeat
    t = time.perf_counter()
    file_sha256(directory / "adapter_model.safetensors")
    sha = time.perf_counter() - t
    modules = LAYERS * len(PROJS)
    cores = os.cpu_count() or 1
    flops = 2 * (2 * D * R * R)
    return modules * (widen + gram + svd) / cores, flops / gram / 1e9, sha


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
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-dense", action="store_true")
    args = parser.parse_args()
    directory = write_mistral_shaped(args.dir)
    size = (directory / "adapter_model.safetensors").stat().st_size / 2**20
    print(
        f"adapter: {LAYERS * len(PROJS)} modules {D}x{D} r={R} bf16, {size:.0f} MiB, "
        f"{os.cpu_count()} cores"
    )
    audit_s = in_process(directory, args.repeat)
    floor_s, gflops, sha_s = arithmetic_estimate(directory)
    bare_s = in_process(directory, args.repeat, hashed=False)
    print(f"audit in process:                 {audit_s:.3f} s   (target <= 0.5 s)")
    print(
        f"arithmetic estimate:              {floor_s:.3f} s   (widen + 2 Gram products + the "
        f"r x r SVD per module at {gflops:.1f} GFLOP/s per core, over {os.cpu_count()} cores; "
        f"in process = {audit_s / floor_s:.1f}x it, target <= 2x)"
    )
    print(
        f"  content hash (SHA-256, 1 core):  {sha_s:.3f} s   (every audit names the bytes it "
        "read; it runs beside the arithmetic, on a thread)"
    )
    print(
        f"audit in process, hash left out:  {bare_s:.3f} s   (the spectral work alone = "
        f"{bare_s / floor_s:.1f}x the arithmetic)"
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
