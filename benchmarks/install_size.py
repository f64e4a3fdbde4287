"""The install's size on disk: the wheel built from this checkout, installed under
requirements/lock.txt into a fresh venv without pip, as a PyPI user's ``pip install
gradience-hub`` would (the core, no extras), or with ``--extra bench`` ``torch==2.13.0`` first
and then ``gradience-hub[bench]``, as the bench image does. Prints the venv's total and its
largest packages.

    python benchmarks/install_size.py [--extra bench]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
PIP = (sys.executable, "-m", "pip")


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--extra", choices=["bench", "serve"], default=None)
    extra = parser.parse_args().extra
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run(
            [sys.executable, "-m", "build", "--wheel", "--outdir", str(work), str(ROOT)],
            check=True,
            capture_output=True,
        )
        [wheel] = work.glob("gradience_hub-*.whl")
        prefix = work / "venv"
        venv.create(prefix, with_pip=False)
        python = prefix / "bin" / "python"
        start = time.monotonic()
        if extra == "bench":  # torch first and pinned, as the Makefile and the Dockerfile do
            subprocess.run(
                [*PIP, "--python", str(python), "install", "--quiet", "torch==2.13.0"], check=True
            )
        spec = f"{wheel}[{extra}]" if extra else str(wheel)
        subprocess.run(
            [*PIP, "--python", str(python), "install", "--quiet", "-c", str(LOCK), spec],
            check=True,
            capture_output=True,
        )
        took = time.monotonic() - start
        [site] = (prefix / "lib").glob("python*/site-packages")
        parts = sorted(((du(p), p.name) for p in site.iterdir() if p.is_dir()), reverse=True)
        print(
            f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, Python {platform.python_version()}"
        )
        print(
            f"{'core' + (f' + {extra}' if extra else '')} install (fresh venv, no pip): "
            f"{du(prefix) / 1e6:.0f} MB, "
            f"installed in {took:.0f} s"
        )
        print("largest: " + ", ".join(f"{name} {size / 1e6:.0f} MB" for size, name in parts[:6]))


if __name__ == "__main__":
    main()
