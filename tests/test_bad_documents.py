"""audit.json and bench.json are untrusted documents: every malformed one is exit 2 with a
one- or two-line message naming the file, never an internal error (exit 70)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _bad_documents(tmp_path: Path) -> dict[str, Path]:
    audit = json.loads((GOLDEN / "audit.json").read_text())
    audit["source"] = "x"
    return {
        "source is a string": _write(tmp_path, "src.json", json.dumps(audit).encode()),
        "nested too deeply": _write(tmp_path, "deep.json", b"[" * 100_000 + b"]" * 100_000),
        "not UTF-8": _write(tmp_path, "bytes.json", b'{"a": "\xff"}'),
        "not an object": _write(tmp_path, "list.json", b"[1, 2]"),
    }


@pytest.mark.parametrize("which", ["--audit", "--bench"])
def test_malformed_documents_are_exit_2(tmp_path: Path, which: str) -> None:
    for label, path in _bad_documents(tmp_path).items():
        args = ["--bench", str(GOLDEN / "bench_pass.json"), "--audit", str(path)]
        if which == "--bench":
            args = ["--bench", str(path)]
        proc = subprocess.run(
            [sys.executable, "-m", "gradience_hub", "render", *args, "--format", "card"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 2, (label, proc.stderr)
        assert proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert 1 <= len(lines) <= 2 and lines[0].startswith("Error: "), (label, proc.stderr)
        assert "internal error" not in proc.stderr
