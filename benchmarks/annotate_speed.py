"""Annotate the Mistral-7B-shaped adapter of audit_speed.py through the loopback Hub server.

Reports the total wall time of `annotate()` and its parts: the Hub client's import (what any
command that downloads from the Hub pays first), download (adapter files from the server into a
fresh cache), audit, render (card, JSON, picture), commit (the Hub PR), and the rest (revision
resolution, PR lookup, README reads; the identity is asked on a thread during the download).
Target: everything but the client import, the download and the audit adds <= 1 s.

The server is tests/hubserver.py, the same Hub stand-in the tests use (stdlib, in-process).

    python benchmarks/annotate_speed.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from audit_speed import write_mistral_shaped  # noqa: E402

from tests.hubserver import HubServer  # noqa: E402

TIMES: dict[str, float] = defaultdict(float)


def timed(name: str, fn):  # type: ignore[no-untyped-def]
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[name] += time.perf_counter() - start

    return wrapper


def main() -> None:
    directory = write_mistral_shaped(Path(tempfile.gettempdir()) / "gh-bench-7b")
    files = {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}
    with HubServer() as server:
        server.add_user("alice", "hf_alice_bench_token")
        server.create_repo("alice/mistral-7b-lora", files, owner="alice")
        # huggingface_hub reads its endpoint and cache at import: configure first
        for key, value in server.subprocess_env().items():
            os.environ[key] = value
        from gradience_hub import hub
        from gradience_hub.publish import annotate

        hub.load_adapter = timed("download + open", hub.load_adapter)
        annotate.audit_adapter = timed("audit", annotate.audit_adapter)
        annotate.evidence_files = timed("render (card, json, png)", annotate.evidence_files)
        hub.commit_files = timed("commit (Hub PR)", hub.commit_files)
        start = time.perf_counter()
        # The Hub client's import, inside the total but apart from annotate's own time: any
        # command that downloads from the Hub pays it (an audit of a Hub repo too), and
        # annotate's first Hub call would otherwise carry it.
        import huggingface_hub.hf_api  # noqa: F401
        from huggingface_hub import get_token  # noqa: F401

        TIMES["Hub client import"] = time.perf_counter() - start
        result = annotate.annotate("alice/mistral-7b-lora")
        total = time.perf_counter() - start
    print(f"annotate alice/mistral-7b-lora -> {result.pr_url}")
    print(f"total:                      {total:.2f} s")
    for name, seconds in TIMES.items():
        print(f"  {name:<26}{seconds:.2f} s")
    other = total - sum(TIMES.values())
    print(f"  {'other Hub calls':<26}{other:.2f} s")
    extra = total - TIMES["Hub client import"] - TIMES["download + open"] - TIMES["audit"]
    print(f"everything but the client import, download and audit: {extra:.2f} s (target <= 1 s)")


if __name__ == "__main__":
    main()
