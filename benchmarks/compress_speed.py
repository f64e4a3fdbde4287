"""compress speed and memory against gradience 0.11's truncate, side by side (figures, not a test).

Both tools run as fresh processes on the same Mistral-7B-shaped adapter of
benchmarks/audit_speed.py (128 modules of 4096 x 4096 at r=64, bf16), alternating, best of
``--repeat``:

- ``gradience-hub compress SRC -o OUT --rank 16`` (numpy self-check, Eckart-Young and
  as-stored error report), and the same with ``--verify peft``;
- gradience 0.11.0's ``gradience truncate --peft-dir SRC --out-dir OUT --rank 16 --dtype bf16``.

gradience 0.11.0 is installed from PyPI into its own venv under ``--work`` (``--no-deps``, plus
``rich``, its one dependency torch-free venvs lack); torch, numpy and the rest are reused from
this interpreter's site-packages through a ``.pth`` file, so nothing pulls torch.
Targets: compress >= 3x faster than truncate, peak RSS <= 500 MB.

    python benchmarks/compress_speed.py [--repeat 3] [--work DIR] [--g011-python PY]
"""

from __future__ import annotations

import argparse
import os
import shutil
import site
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audit_speed import spawned, write_mistral_shaped

ROOT = Path(__file__).resolve().parents[1]


def g011_python(work: Path) -> Path:
    """A venv with gradience==0.11.0 that sees this interpreter's packages (torch included)."""
    venv = work / "g011-venv"
    python = venv / "bin" / "python"
    if not (venv / "bin" / "gradience").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        packages = next(p for p in site.getsitepackages() if p.endswith("site-packages"))
        target = next((venv / "lib").glob("python*/site-packages"))
        (target / "_host_packages.pth").write_text(packages + "\n")
        pip = [str(python), "-m", "pip", "install", "-q", "--no-deps"]
        subprocess.run([*pip, "gradience==0.11.0"], check=True)
    return python


def run(cmd: list[str], out: Path, threads: int | None) -> tuple[float, float]:
    """Wall time (s) and peak RSS (MB) of one fresh process writing to ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if threads:
        # the same BLAS/OpenMP thread count for both tools (torch reads OMP_NUM_THREADS)
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    elapsed, rss, code = spawned(cmd, env)  # its stderr shows here
    if code:
        raise SystemExit(f"{cmd[:4]} failed ({code})")
    return elapsed, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "gh-bench")
    parser.add_argument("--adapter", type=Path, default=Path(tempfile.gettempdir()) / "gh-bench-7b")
    parser.add_argument("--g011-python", type=Path, help="a python with gradience 0.11.0")
    parser.add_argument(
        "--threads",
        type=int,
        help="BLAS/OpenMP threads for both tools (1 on a shared machine: spinning BLAS threads "
        "on oversubscribed cores slow both tools by an order of magnitude)",
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    src = write_mistral_shaped(args.adapter)
    g011 = args.g011_python or g011_python(args.work)
    gradience = [str(g011), "-m", "gradience.cli"]
    if subprocess.run([*gradience, "--help"], capture_output=True).returncode != 0:
        gradience = [str(Path(g011).parent / "gradience")]
    out = args.work / "out"
    ours = [sys.executable, "-m", "gradience_hub", "compress", str(src), "-o", str(out)]
    cases = {
        "gradience-hub compress --rank 16": [*ours, "--rank", "16"],
        "gradience-hub compress --rank 16 --verify peft": [
            *ours,
            "--rank",
            "16",
            "--verify",
            "peft",
        ],
        "gradience 0.11 truncate --rank 16 --dtype bf16": [
            *gradience,
            "truncate",
            "--peft-dir",
            str(src),
            "--out-dir",
            str(out),
            "--rank",
            "16",
            "--dtype",
            "bf16",
        ],
    }
    best: dict[str, tuple[float, float]] = {}
    for _ in range(args.repeat):  # alternate, so load changes hit every case alike
        for name, cmd in cases.items():
            t, rss = run(cmd, out, args.threads)
            old = best.get(name, (float("inf"), 0.0))
            best[name] = (min(old[0], t), max(old[1], rss))
    threads = args.threads or "default"
    print(
        f"adapter: {src} (128 modules 4096x4096 r=64 bf16), "
        f"{os.cpu_count()} cores, {threads} threads"
    )
    for name, (t, rss) in best.items():
        print(f"{name:<50} {t:6.2f} s  peak RSS {rss:5.0f} MB")
    base = best["gradience 0.11 truncate --rank 16 --dtype bf16"][0]
    ours_t, ours_rss = best["gradience-hub compress --rank 16"]
    print(f"speed-up over gradience 0.11: {base / ours_t:.1f}x (target >= 3x)")
    print(f"peak RSS: {ours_rss:.0f} MB (target <= 500 MB)")


if __name__ == "__main__":
    main()
