"""``gradience-hub scan`` as a user runs it (``python -m gradience_hub.scan``, a subprocess
against the Hub stand-in): exit codes and one-line errors, ``--json``, the token never written,
and a scan killed with SIGKILL then ``--resume``d that redoes nothing and loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from tests.hubserver_listing import plant_fleet

TOKEN = "hf_alice_write_token"


def _run(hub: Any, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gradience_hub.scan", *args],
        env=hub.subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _assert_short_error(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2 and lines[0].startswith("Error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr


def test_bad_input_is_exit_2_and_hub_failure_exit_3(hub_server: Any, tmp_path: Path) -> None:
    hub = hub_server
    out = str(tmp_path / "out")
    _assert_short_error(_run(hub, "-o", out), 2, "exactly one source")
    _assert_short_error(_run(hub, "--author", "a", "--limit", "0", "-o", out), 2, "--limit")
    ids = tmp_path / "ids.txt"
    ids.write_text("org/fine\nnot a repo\x1b[31m\n")
    proc = _run(hub, "--from", str(ids), "-o", out)
    _assert_short_error(proc, 2, "line 2")
    assert "\x1b" not in proc.stderr  # untrusted text is printed without control characters
    _assert_short_error(
        _run(hub, "--author", "a", "--push-to-hub", "no-slash", "-o", out), 2, "--push-to-hub"
    )
    assert not Path(out).exists()  # refused before anything was written

    hub.inject("GET", r"^/api/models$", status=403, times=5)
    _assert_short_error(_run(hub, "--author", "fleet", "-o", out), 3, "listing")
    assert not (Path(out) / "adapters.parquet").exists()


def test_json_summary_and_no_token_anywhere(hub_server: Any, tmp_path: Path) -> None:
    hub = hub_server
    planted = plant_fleet(hub, 4)
    n_adapters = sum(len(p.adapters) for p in planted)
    n_modules = sum(a.n_modules for p in planted for a in p.adapters)
    out = tmp_path / "out"
    proc = _run(hub, "--author", "fleet", "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["census"]["adapters"] == n_adapters == 5  # one repo holds two adapters
    assert summary["census"]["repos"] == 4
    assert summary["rows"] == {"adapters": n_adapters, "modules": n_modules}
    assert TOKEN not in proc.stdout + proc.stderr
    for path in out.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    again = _run(hub, "--author", "fleet", "-o", str(out))
    _assert_short_error(again, 2, "--resume")


def _journal_lines(out: Path) -> int:
    path = out / ".scan" / "journal.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_sigkill_then_resume_redoes_nothing_and_loses_nothing(
    hub_server: Any, tmp_path: Path
) -> None:
    hub = hub_server
    planted = plant_fleet(hub, 12, junk_every=0)
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"{p.repo_id}\n" for p in planted))
    # Repo 6's weights are held at the server until a second request for them arrives: the
    # kill lands while it is in flight, after repos 0-5 were recorded.
    hub.gate("GET", r"^/fleet/adapter-0006/resolve/.*safetensors$", parties=2, timeout=120)
    out = tmp_path / "out"
    args = ["--from", str(ids), "-o", str(out), "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gradience_hub.scan", *args],
        env=hub.subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while _journal_lines(out) < 6 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert _journal_lines(out) == 6, proc.stderr.read() if proc.stderr else ""
    time.sleep(0.3)  # repo 6 waits at the gate, repo 7 is queued
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "adapters.parquet").exists()
    # a line the kill would have torn: not a finished repo, so it is dropped and redone
    with (out / ".scan" / "journal.jsonl").open("ab") as fh:
        fh.write(b'{"repo":"fleet/adapter-0007","adapters":[{"repo"')

    hub.clear_requests()
    resumed = _run(hub, *args, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["this_run"]["resumed_from"] == 6 and summary["this_run"]["repos"] == 6
    for k in range(6):  # done before the kill: not one request
        assert not hub.requests_to(rf"fleet/adapter-{k:04d}"), k
    rows = pq.read_table(out / "adapters.parquet").to_pylist()
    assert sorted({r["repo"] for r in rows}) == [p.repo_id for p in planted]
    keys = [(r["repo"], r["adapter"]) for r in rows]
    assert len(keys) == len(set(keys)) == sum(len(p.adapters) for p in planted)  # none twice

    clean = tmp_path / "clean"
    assert _run(hub, "--from", str(ids), "-o", str(clean), "--no-progress").returncode == 0

    def key(r: dict[str, Any]) -> tuple[str, str]:
        return (r["repo"], r["adapter"])

    fresh = pq.read_table(clean / "adapters.parquet").to_pylist()
    assert sorted(rows, key=key) == sorted(fresh, key=key)
    mods = pq.read_table(out / "modules.parquet").to_pylist()
    fresh_mods = pq.read_table(clean / "modules.parquet").to_pylist()
    assert sorted(mods, key=lambda m: (m["repo"], m["module"])) == sorted(
        fresh_mods, key=lambda m: (m["repo"], m["module"])
    )
