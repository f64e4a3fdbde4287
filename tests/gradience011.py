"""gradience 0.11.0 itself, installed from PyPI into ``.venv-gradience011/`` for the agreement
tests (``make clean`` removes it).

The venv sees this interpreter's packages through a ``.pth`` file (torch, numpy, safetensors,
as benchmarks/compress_speed.py does) and installs gradience with ``--no-deps``, so nothing
else is resolved from the index. A file lock makes parallel test workers build it once; a
finished install is marked, so a half-built venv (an interrupted pip) is rebuilt, not trusted.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import site
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-gradience011"
VERSION = "0.11.0"


def _build() -> None:
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    packages = next(p for p in site.getsitepackages() if p.endswith("site-packages"))
    target = next((VENV / "lib").glob("python*/site-packages"))
    (target / "_host_packages.pth").write_text(packages + "\n")
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps"]
    last = None
    for _ in range(3):  # PyPI hiccups in CI are retried, then reported
        proc = subprocess.run(
            [*pip, "--timeout", "60", f"gradience=={VERSION}"],
            capture_output=True,
            text=True,
        )
        if proc.returncode == 0:
            return
        last = proc.stderr.strip().splitlines()[-1:] or ["pip failed"]
    raise RuntimeError(f"pip install gradience=={VERSION} failed: {last[0] if last else ''}")


def gradience011() -> Path:
    """The ``gradience`` console script of gradience 0.11.0 (built on first use)."""
    marker = VENV / f".installed-{VERSION}"
    VENV.parent.mkdir(exist_ok=True)
    # the lock lives outside the venv, which a failed build removes
    with open(Path(tempfile.gettempdir()) / "gradience-hub-venv-gradience011.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            try:
                _build()
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                if os.environ.get("CI"):
                    pytest.fail(str(exc))
                pytest.skip(f"gradience {VERSION} could not be installed here: {exc}")
            marker.touch()
    return VENV / "bin" / "gradience"


def run_python(code: str, *args: str) -> str:
    """Run ``code`` with gradience 0.11.0's interpreter; its stdout."""
    gradience011()
    proc = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", code, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout
