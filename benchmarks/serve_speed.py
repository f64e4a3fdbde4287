"""`gradience-hub serve` speed on the loopback Hub stand-in (figures, not a pass/fail test).

1. Event-to-PR latency for the Mistral-7B-shaped adapter of audit_speed.py (128 MiB): from the
   webhook POST to the Hub PR existing (download + audit + render + publish inside the running
   service), against `gradience-hub annotate` alone on the same adapter (a whole process, as a
   user runs it; and the same call in a warm process). Target: within 1 s of annotate alone.
   The service's first job pays its imports (matplotlib, the client), later jobs do not.
2. Sustained accepted events per second (a service with --workers 0, so nothing but the
   webhook path runs): new (repo, sha) events, then the same events replayed (dedup answers).

The Hub is tests/hubserver.py with tests/hubserver_webhooks.py, in this process (stdlib);
the service is the real CLI in a subprocess, as in tests/test_serve.py.

    python benchmarks/serve_speed.py [--events 2000] [--concurrency 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from audit_speed import write_mistral_shaped  # noqa: E402

from tests.hubserver import HubServer  # noqa: E402

SECRET = "serve-benchmark-secret"
TOKEN = "hf_bench_bot_token"


class ServeProcess:
    """`gradience-hub serve` in a subprocess; ``url`` once it listens."""

    def __init__(self, hub: HubServer, state: Path, *args: str) -> None:
        env = hub.subprocess_env(token=TOKEN, WEBHOOK_SECRET=SECRET, PYTHONPATH=str(ROOT))
        env["HF_HOME"] = tempfile.mkdtemp(prefix="serve-bench-home-")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gradience_hub",
                "serve",
                "--port=0",
                f"--state-dir={state}",
                *args,
            ],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 60
        self.url = ""
        while not self.url:
            for line in list(self.lines):
                record = json.loads(line) if line.startswith("{") else {}
                if record.get("event") == "serve.listening":
                    self.url = record["url"]
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("serve did not start:\n" + "".join(self.lines))
            time.sleep(0.02)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def post(self, payload: dict[str, Any]) -> int:
        request = urllib.request.Request(
            self.url + "/webhook",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", "X-Webhook-Secret": SECRET},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def payload(repo: str, sha: str) -> dict[str, Any]:
    """A Hub webhook (v3) for a push of ``sha`` to main."""
    return {
        "event": {"action": "update", "scope": "repo.content"},
        "repo": {"type": "model", "name": repo, "headSha": sha, "private": False},
        "updatedRefs": [{"ref": "refs/heads/main", "oldSha": None, "newSha": sha}],
        "webhook": {"id": "bench", "version": 3},
    }


def _annotate_cli(hub: HubServer, repo: str) -> float:
    env = hub.subprocess_env(token=TOKEN, PYTHONPATH=str(ROOT))
    env["HF_HOME"] = tempfile.mkdtemp(prefix="annotate-bench-home-")  # a cold cache, as serve's
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "gradience_hub", "annotate", repo],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def _job_line(service: ServeProcess, event: str, job: int, timeout: float = 600) -> dict[str, Any]:
    """Wait for the service's log line ``event`` of ``job`` (the Hub process is not polled:
    it serves the download, and polling it would slow the very thing measured)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(service.lines):
            record = json.loads(line) if line.startswith("{") else {}
            if record.get("event") == event and record.get("job") == job:
                return record
        time.sleep(0.005)
    raise SystemExit(f"no {event} for job {job} after {timeout}s")


def _stamp(record: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(record["ts"]).timestamp()


def latency(hub: HubServer, files: dict[str, bytes], work: Path, rounds: int) -> None:
    cli: list[float] = []
    served: list[dict[str, float]] = []
    service = ServeProcess(hub, work / "state-latency")
    try:
        # alternate the two so that load from other processes hits both alike
        for i in range(rounds + 1):
            repo = f"bench/m7b-serve-{i}"
            sha = hub.create_repo(repo, files, owner="alice")
            posted = time.time()
            request = urllib.request.Request(
                service.url + "/webhook",
                data=json.dumps(payload(repo, sha)).encode(),
                headers={"Content-Type": "application/json", "X-Webhook-Secret": SECRET},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                job = json.loads(response.read())["job_id"]
            started = _job_line(service, "job.started", job)
            done = _job_line(service, "job.done", job)
            assert hub.prs(repo), f"no PR on {repo}"
            served.append(
                {
                    "total": _stamp(done) - posted,
                    "intake": _stamp(started) - posted,
                    "job": done["seconds"],
                    "annotate": done["annotate_seconds"],
                }
            )
            if i < rounds:
                repo = f"bench/m7b-cli-{i}"
                hub.create_repo(repo, files, owner="alice")
                cli.append(_annotate_cli(hub, repo))
    finally:
        service.stop()

    def row(key: str, items: list[dict[str, float]], digits: int = 2) -> str:
        return ", ".join(f"{t[key]:.{digits}f}" for t in items)

    print("Event-to-PR latency, Mistral-7B-shaped adapter (128 MiB), loopback Hub:")
    print(f"  gradience-hub annotate, whole process:  {', '.join(f'{t:.2f}' for t in cli)} s")
    print(f"  serve, event -> PR (first: warm-up):    {row('total', served)} s")
    print(f"    webhook POST -> job started:          {row('intake', served, 3)} s")
    print(f"    annotate inside the job:              {row('annotate', served)} s")
    extra = [t["total"] - t["annotate"] for t in served]
    print(f"    everything else (queue, listing):     {', '.join(f'{e:.2f}' for e in extra)} s")
    best = min(t["total"] for t in served[1:]) - min(cli)
    print(f"  best event -> PR minus best annotate:   {best:+.2f} s (target <= +1 s)")


def throughput(hub: HubServer, events: int, concurrency: int, work: Path) -> None:
    service = ServeProcess(
        hub, work / "state-throughput", "--workers", "0", "--max-queue", "100000"
    )
    items = [(f"load/repo-{i % 50:02d}", f"{i + 1:040x}") for i in range(events)]
    try:
        for label in ("new events (202 queued)", "replayed events (200 duplicate)"):
            start = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                codes = list(pool.map(lambda e: service.post(payload(*e)), items))
            elapsed = time.perf_counter() - start
            expected = 202 if label.startswith("new") else 200
            assert codes == [expected] * events, set(codes)
            print(f"  {label:<32} {events / elapsed:7.0f} events/s ({events} in {elapsed:.2f} s)")
    finally:
        service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="annotate runs and warm events")
    args = parser.parse_args()
    directory = write_mistral_shaped(Path(tempfile.gettempdir()) / "gh-bench-7b")
    files = {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp, HubServer() as hub:
        hub.add_user("alice", "hf_alice_bench_token")
        hub.add_user("bot", TOKEN)
        latency(hub, files, Path(tmp), args.rounds)
        print(f"Sustained webhook intake, {args.concurrency} concurrent senders, 50 repos:")
        throughput(hub, args.events, args.concurrency, Path(tmp))


if __name__ == "__main__":
    main()
