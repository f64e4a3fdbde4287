"""Resolve the whole install against the public package index alone, as a new user's pip would.

This development machine's pip has a local wheel folder, extra indexes and a constraint file
that an ordinary machine lacks, so an install that works here can fail everywhere else (a lock
pinning ``torch==2.13.0+cpu``, a local build's label, did). Each check below runs pip with
``--isolated`` (no configuration files, no ``PIP_*`` variables: no find-links, no extra indexes)
against one index, in ``--dry-run`` mode with ``--report``: only metadata is fetched, no wheel is
downloaded or installed.

1. ``torch==2.13.0`` with every extra under ``-c requirements/lock.txt``: the Makefile's and the
   README's install, resolved in one go from nothing installed.
2. The bench extra under the lock on top of an installed ``torch 2.13.0+cpu`` and
   ``2.13.0+cu128``: the Dockerfile's second install step after its first one took torch from
   PyTorch's own index (which these machines cannot reach). A stub wheel of that name and
   version stands for each build: the resolver only reads the installed version.

Usage: ``python scripts/check_resolution.py [--index-url URL]``; exit 0 when every resolution
succeeds, 1 naming the one that failed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"
PUBLIC_INDEX = "https://pypi.org/simple"
TORCH = "2.13.0"
ALL_EXTRAS = "bench,lm-eval,ray,serve,dev"
# The local builds the Dockerfile's TORCH build argument installs (cpu, and a CUDA index name).
TORCH_BUILDS = ("cpu", "cu128")


def _cert_args() -> list[str]:
    # A CA bundle is not an index setting: machines behind a TLS-inspecting proxy need theirs even
    # when every other pip setting is ignored.
    for var in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        path = os.environ.get(var)
        if path and Path(path).is_file():
            return ["--cert", path]
    return []


def _pip(python: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "--python", str(python), "--isolated", *args]


def stub_wheel(folder: Path, name: str, version: str) -> Path:
    """A metadata-only wheel of ``name==version`` (no code, no dependencies)."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: check_resolution\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def _resolve(label: str, cmd: list[str], report: Path) -> dict:
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    took = time.monotonic() - start
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        print(f"FAIL {label} ({took:.0f} s):\n{tail}", file=sys.stderr)
        raise SystemExit(1)
    data = json.loads(report.read_text(encoding="utf-8"))
    print(f"ok   {label}: {len(data.get('install', []))} packages resolved ({took:.0f} s)")
    return data


def _installs(data: dict) -> dict[str, str]:
    return {
        item["metadata"]["name"].lower(): item["metadata"]["version"]
        for item in data.get("install", [])
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index-url", default=PUBLIC_INDEX)
    parser.add_argument("--lock", type=Path, default=LOCK, help="the constraints file to check")
    args = parser.parse_args(argv)
    lock = args.lock.resolve()
    lock_text = lock.read_text(encoding="utf-8")
    labelled = [line for line in lock_text.splitlines() if "==" in line and "+" in line]
    if labelled:
        print(f"FAIL {lock.name} pins local version labels: {labelled}")
        return 1
    index = ["--index-url", args.index_url, *_cert_args()]
    with tempfile.TemporaryDirectory(prefix="resolve-") as tmp:
        work = Path(tmp)
        # 1. From nothing: the system Python stands in for a fresh venv, --ignore-installed makes
        # pip pretend nothing is installed there.
        report = work / "all.json"
        cmd = _pip(
            Path(sys.executable),
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            *index,
            "-c",
            str(lock),
            f"torch=={TORCH}",
            f"{ROOT}[{ALL_EXTRAS}]",
        )
        data = _resolve(f"torch=={TORCH} + .[{ALL_EXTRAS}] -c lock", cmd, report)
        got = _installs(data).get("torch")
        if got != TORCH:
            print(f"FAIL resolved torch {got}, not {TORCH}")
            return 1
        # 2. On top of an installed local torch build, as in the Dockerfile's bench variants.
        for build in TORCH_BUILDS:
            venv = work / f"venv-{build}"
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
            python = venv / "bin" / "python"
            wheel = stub_wheel(work, "torch", f"{TORCH}+{build}")
            subprocess.run(
                _pip(python, "install", "--quiet", "--no-index", "--no-deps", str(wheel)),
                check=True,
            )
            report = work / f"bench-{build}.json"
            cmd = _pip(
                python,
                "install",
                "--dry-run",
                "--quiet",
                "--report",
                str(report),
                *index,
                "-c",
                str(lock),
                f"{ROOT}[bench]",
            )
            data = _resolve(f".[bench] -c lock over torch {TORCH}+{build}", cmd, report)
            if "torch" in _installs(data):
                print(f"FAIL pip would replace torch {TORCH}+{build}: {_installs(data)['torch']}")
                return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
