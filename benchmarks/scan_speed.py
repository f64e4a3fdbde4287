"""Scan speed on the tests' Hub stand-in (issue 24 item 4).

Plants N generated repos (mixed formats: PEFT, two-adapter PEFT, kohya, diffusers; every tenth
is junk: not an adapter, broken, gated) on tests/hubserver.py, then runs
``python -m gradience_hub.scan`` as a user would, and prints:

- adapters per minute, local threads and a fresh local Ray cluster;
- Hub requests per adapter, and how many of them were not file reads (target: at most 3);
- the scan process's peak RSS at N/5 and N repos (flat: results stream to Parquet).

    .venv/bin/python benchmarks/scan_speed.py [--repos 500] [--workers 4] [--no-ray]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hubserver import HubServer  # noqa: E402
from tests.hubserver_listing import plant_fleet  # noqa: E402

# Runs the CLI and reports this process's peak RSS (KiB on Linux) on stderr's last line.
_WRAPPER = (
    "import resource, sys\n"
    "from gradience_hub.scan.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "finally:\n"
    "    print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
)


def run_scan(hub: HubServer, org: str, out: Path, *extra: str) -> tuple[dict, float, int]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, "--author", org, "-o", str(out), "--json", *extra],
        env=hub.subprocess_env(RAY_DISABLE_USAGE_STATS="1"),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    rss = int(proc.stderr.strip().splitlines()[-1].split()[1])
    return json.loads(proc.stdout), wall, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=500)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()

    hub = HubServer(tree_page_size=1000)
    hub.add_user("alice", "hf_alice_write_token")
    hub.listing_page_size = 100  # type: ignore[attr-defined]
    with hub, tempfile.TemporaryDirectory() as tmp:
        small = max(args.repos // 5, 1)
        plant_fleet(hub, small, org="small")
        planted = plant_fleet(hub, args.repos, org="fleet")
        n_adapters = sum(len(p.adapters) for p in planted)
        workers = ("--workers", str(args.workers))

        _, _, rss_small = run_scan(hub, "small", Path(tmp) / "small", *workers)
        hub.clear_requests()
        summary, wall, rss = run_scan(hub, "fleet", Path(tmp) / "local", *workers)
        assert summary["census"]["adapters"] == n_adapters, summary["census"]
        requests = [r for r in hub.requests if r.path != "/api/models"]
        file_reads = [r for r in requests if "/resolve/" in r.path and "range" not in r.headers]
        run = summary["this_run"]
        print(
            f"repos: {args.repos} ({sum(1 for p in planted if p.junk)} junk), "
            f"adapters: {n_adapters}, workers: {args.workers}"
        )
        print(
            f"local: {60 * n_adapters / run['elapsed_s']:.0f} adapters/min "
            f"(scan {run['elapsed_s']:.1f} s, process {wall:.1f} s)"
        )
        print(
            f"Hub requests per adapter: {len(requests) / n_adapters:.2f} "
            f"(file reads {len(file_reads) / n_adapters:.2f}, other "
            f"{(len(requests) - len(file_reads)) / n_adapters:.2f}); listing pages: "
            f"{len(hub.requests) - len(requests)}"
        )
        print(
            f"peak RSS of the scan process: {rss_small / 1024:.0f} MiB at {small} repos, "
            f"{rss / 1024:.0f} MiB at {args.repos} repos"
        )
        if not args.no_ray:
            summary, wall, _ = run_scan(
                hub,
                "fleet",
                Path(tmp) / "ray",
                *workers,
                "--executor",
                "ray",
                "--ray-address",
                "local",
            )
            run = summary["this_run"]
            print(
                f"ray (fresh local cluster): {60 * n_adapters / run['elapsed_s']:.0f} "
                f"adapters/min (scan {run['elapsed_s']:.1f} s, process {wall:.1f} s, "
                "cluster start included)"
            )


if __name__ == "__main__":
    main()
