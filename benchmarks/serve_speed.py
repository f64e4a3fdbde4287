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


def wait_pr(hub: HubServer, repo: str, timeout: float = 300) -> float:
    deadline = time.monotonic() + timeout
    while not hub.prs(repo):
        if time.monotonic() > deadline:
            raise SystemExit(f"no PR on {repo} after {timeout}s")
        time.sleep(0.01)
    return time.perf_counter()


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


def _stamp(service: ServeProcess, event: str, job: int) -> float:
    from datetime import datetime

    for line in service.lines:
        record = json.loads(line) if line.startswith("{") else {}
        if record.get("event") == event and record.get("job") == job:
            return datetime.fromisoformat(record["ts"]).timestamp()
    raise SystemExit(f"no {event} for job {job}")


def latency(hub: HubServer, files: dict[str, bytes], work: Path, rounds: int) -> None:
    cli: list[float] = []
    served: list[tuple[float, float, float]] = []  # event-to-PR, intake-to-start, job run
    service = ServeProcess(hub, work / "state-latency")
    try:
        # alternate the two so that load from other processes hits both alike
        for i in range(rounds + 1):
            repo = f"bench/m7b-serve-{i}"
            sha = hub.create_repo(repo, files, owner="alice")
            posted = time.time()
            start = time.perf_counter()
            request = urllib.request.Request(
                service.url + "/webhook",
                data=json.dumps(payload(repo, sha)).encode(),
                headers={"Content-Type": "application/json", "X-Webhook-Secret": SECRET},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                job = json.loads(response.read())["job_id"]
            total = wait_pr(hub, repo) - start
            time.sleep(0.3)  # let the job's log line land
            began, ended = _stamp(service, "job.started", job), _stamp(service, "job.done", job)
            served.append((total, began - posted, ended - began))
            if i < rounds:
                repo = f"bench/m7b-cli-{i}"
                hub.create_repo(repo, files, owner="alice")
                cli.append(_annotate_cli(hub, repo))
    finally:
        service.stop()
    print("Event-to-PR latency, Mistral-7B-shaped adapter (128 MiB), loopback Hub:")
    print(f"  gradience-hub annotate, whole process:   {', '.join(f'{t:.2f}' for t in cli)} s")
    first, warm = served[0], served[1:]
    print(f"  serve, first event (its imports):        {first[0]:.2f} s")
    print(f"  serve, next events:                      {', '.join(f'{t[0]:.2f}' for t in warm)} s")
    print(f"    webhook POST -> job started:           {', '.join(f'{t[1]:.3f}' for t in warm)} s")
    print(f"    job (download, audit, publish):        {', '.join(f'{t[2]:.2f}' for t in warm)} s")
    best_cli, best_warm = min(cli), min(t[0] for t in warm)
    print(
        f"  warm event-to-PR minus annotate (best): {best_warm - best_cli:+.2f} s (target <= +1 s)"
    )


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
