"""Truncation speed on a synthetic SDXL-shaped kohya LoRA: our QR route vs the dense SVD route of
kohya-ss's networks/resize_lora.py (figures, not a pass/fail test).

The file: every transformer block of the SDXL UNet (10 at 640 channels, 60 at 1280) with LoRA
on attn1 q/k/v/out, attn2 q/k/v/out (k, v from the 2048-wide text embedding) and the feed-forward
(ff.net.0.proj C -> 8C, ff.net.2 4C -> C): 700 modules at r=32 in fp16, with kohya's key names
and ``.alpha``. Both routes truncate every module to rank 16 and report the Eckart-Young error:

- ours: the audit reads the file, then per module :func:`gradience_hub.spectral.factored_svd`
  (thin QRs of the factors, an ``r x r`` SVD) and the balanced rank-16 factors;
- dense (what resize_lora does per module): merge ``up @ down`` into the ``d_out x d_in``
  matrix in float32 and ``torch.linalg.svd`` it, keep the top 16 directions.

The dense route is measured on one module of each distinct shape and extrapolated by shape count
(it runs for minutes on 2 cores), unless ``--full``. It models kohya's per-module work; the
README's comparison runs kohya's real ``resize_lora.py`` instead (benchmarks/compare.py, which
takes this file's module list) and quotes no figure of this script.

    python benchmarks/sdxl_lora_speed.py [--dir DIR] [--full] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

R, K = 32, 16


def sdxl_modules() -> dict[str, tuple[int, int]]:
    """kohya module name -> (d_out, d_in) for the SDXL UNet's transformer blocks."""
    layout = [("down_blocks_1", 640, 2, 2), ("down_blocks_2", 1280, 2, 10)]
    layout += [("up_blocks_0", 1280, 3, 10), ("up_blocks_1", 640, 3, 2)]
    blocks = [(f"{p}_attentions_{a}", c, n) for p, c, na, n in layout for a in range(na)]
    blocks.append(("mid_block_attentions_0", 1280, 10))
    out: dict[str, tuple[int, int]] = {}
    for prefix, c, n in blocks:
        for t in range(n):
            base = f"lora_unet_{prefix}_transformer_blocks_{t}"
            for proj in ("to_q", "to_k", "to_v", "to_out_0"):
                out[f"{base}_attn1_{proj}"] = (c, c)
            out[f"{base}_attn2_to_q"] = (c, c)
            out[f"{base}_attn2_to_k"] = (c, 2048)
            out[f"{base}_attn2_to_v"] = (c, 2048)
            out[f"{base}_attn2_to_out_0"] = (c, c)
            out[f"{base}_ff_net_0_proj"] = (8 * c, c)
            out[f"{base}_ff_net_2"] = (c, 4 * c)
    return out


def write_file(directory: Path) -> Path:
    import numpy as np
    from safetensors.numpy import save_file

    path = directory / "sdxl_lora.safetensors"
    if path.exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    decay = np.geomspace(1.0, 1e-2, R)
    tensors = {}
    for name, (d_out, d_in) in sdxl_modules().items():
        tensors[f"{name}.lora_down.weight"] = (
            rng.standard_normal((R, d_in)) / np.sqrt(d_in)
        ).astype(np.float16)
        tensors[f"{name}.lora_up.weight"] = (rng.standard_normal((d_out, R)) * decay * 0.05).astype(
            np.float16
        )
        tensors[f"{name}.alpha"] = np.array(16.0, dtype=np.float16)
    save_file(tensors, str(path), metadata={"ss_network_dim": str(R), "ss_network_alpha": "16"})
    return path


def ours(path: Path) -> tuple[float, float]:
    from gradience_hub import spectral
    from gradience_hub.adapter import open_adapter

    started = time.perf_counter()
    worst = 0.0
    for module in open_adapter(path).modules():
        f = spectral.factored_svd(module.B, module.A, module.scale)
        f.truncated(K)
        worst = max(worst, spectral.truncation_error(f.S, K))
    return time.perf_counter() - started, worst


def dense(path: Path, full: bool) -> tuple[float, int]:
    import torch
    from safetensors import safe_open

    shapes = sdxl_modules()
    counts = Counter(shapes.values())
    todo = list(shapes) if full else [next(n for n in shapes if shapes[n] == s) for s in counts]
    total = 0.0
    with safe_open(str(path), framework="pt") as f:
        for name in todo:
            started = time.perf_counter()
            down = f.get_tensor(f"{name}.lora_down.weight").float()
            up = f.get_tensor(f"{name}.lora_up.weight").float()
            alpha = float(f.get_tensor(f"{name}.alpha"))
            W = (alpha / R) * (up @ down)
            U, S, Vh = torch.linalg.svd(W, full_matrices=False)
            _ = (U[:, :K] * S[:K].sqrt(), S[:K].sqrt()[:, None] * Vh[:K])
            took = time.perf_counter() - started
            total += took if full else took * counts[shapes[name]]
    return total, len(todo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "gh-bench-sdxl")
    parser.add_argument("--full", action="store_true", help="run the dense route on every module")
    parser.add_argument("--threads", type=int, help="torch threads for the dense route")
    args = parser.parse_args()
    path = write_file(args.dir)
    n = len(sdxl_modules())
    size = path.stat().st_size / 2**20
    print(f"file: {path} ({n} modules, r={R}, fp16, {size:.0f} MiB), {os.cpu_count()} cores")
    t_ours, worst = ours(path)
    print(f"ours  (QR of the factors, r x r SVD), all {n} modules:   {t_ours:7.2f} s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    t_dense, measured = dense(path, args.full)
    how = "measured" if args.full else f"{measured} shapes measured, extrapolated"
    print(f"dense (merge + torch.linalg.svd, float32), {how}: {t_dense:7.2f} s")
    print(f"speed-up: {t_dense / t_ours:.0f}x; worst Eckart-Young error at k={K}: {worst:.3e}")


if __name__ == "__main__":
    main()
