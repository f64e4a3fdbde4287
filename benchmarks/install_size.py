"""The core install's size on disk: the wheel built from this checkout, installed alone (no
extras) under requirements/lock.txt into a fresh venv without pip, as a PyPI user's
``pip install gradience-hub`` would. Prints the venv's total and its largest packages.

    python benchmarks/install_size.py
"""

from __future__ import annotations

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
        subprocess.run(
            [*PIP, "--python", str(python), "install", "--quiet", "-c", str(LOCK), str(wheel)],
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
            f"core install (fresh venv, no pip): {du(prefix) / 1e6:.0f} MB, "
            f"installed in {took:.0f} s"
        )
        print("largest: " + ", ".join(f"{name} {size / 1e6:.0f} MB" for size, name in parts[:6]))


if __name__ == "__main__":
    main()
