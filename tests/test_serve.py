"""`gradience-hub serve`: the webhook service run by uvicorn on 127.0.0.1 (a subprocess, the real
CLI) against the Hub stand-in (tests/hubserver.py, with tests/hubserver_webhooks.py delivering the
Hub's webhooks), plus the pure parts (event rules, config, queue) in process.

One service process is shared by the module (its config routes repo namespaces to rules: `direct/*`
commits to the branch, `bench/*` publishes a bench.json from the repo, `alice/*`, `burst/*`,
`kill/*`, `late/*` open Hub PRs, anything else matches no rule); the tests that kill or
reconfigure a service start their own.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from gradience_hub.errors import ConfigError
from gradience_hub.serve import JobQueue, QueueFull, ServeConfig, load_config, route_event
from gradience_hub.serve.app import status_page
from gradience_hub.serve.events import PayloadError
from gradience_hub.serve.worker import backoff, is_adapter_listing
from tests.factories import adapter_files, llama_like_adapter
from tests.hubserver import HubServer, configure_client

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"
SECRET = "webhook-secret-for-tests-0123456789"
BOT = "gradience-bot"
BOT_TOKEN = "hf_gradience_bot_write_token_abcdef"
STATUS_TOKEN = "status-token-of-the-operator-0123456789"
OPERATOR = {"Authorization": f"Bearer {STATUS_TOKEN}"}
CONFIG = """\
watch: {branch: main}
repos:
  - match: "direct/*"
    direct: true
  - match: "bench/*"
    bench_json: eval/bench.json
  - match: "alice/*"
  - match: "burst/*"
  - match: "kill/*"
  - match: "late/*"
"""


# --------------------------------------------------------------------------- helpers


def wait_for(
    check: Callable[[], Any], timeout: float = 60.0, what: str = "condition", every: float = 0.05
) -> Any:
    """Poll ``check`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def push_payload(
    repo: str,
    sha: str,
    ref: str = "refs/heads/main",
    *,
    old: str | None = "1" * 40,
    scope: str = "repo.content",
    action: str = "update",
    repo_type: str = "model",
) -> dict[str, Any]:
    """A Hub webhook payload (version 3) for a push of ``sha`` to ``ref``."""
    return {
        "event": {"action": action, "scope": scope},
        "repo": {
            "type": repo_type,
            "name": repo,
            "id": "6390e855e30d9209411de93b",
            "private": False,
            "headSha": sha,
            "url": {"web": f"https://hf.example/{repo}", "api": f"https://hf.example/api/{repo}"},
            "owner": {"id": "628b753283ef59b5be89e937"},
        },
        "updatedRefs": [{"ref": ref, "oldSha": old, "newSha": sha}],
        "webhook": {"id": "65d6e2ab0bc0ec17b2cbd5a4", "version": 3},
    }


class Service:
    """A `gradience-hub serve` subprocess; its stderr (JSON log lines) is collected."""

    def __init__(self, hub: HubServer, state_dir: Path, *args: str, **env: str) -> None:
        self.hub, self.state_dir = hub, state_dir
        environ = hub.subprocess_env(
            token=BOT_TOKEN, WEBHOOK_SECRET=SECRET, STATUS_TOKEN=STATUS_TOKEN, PYTHONPATH=str(ROOT)
        )
        environ.update(env)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gradience_hub",
                "serve",
                "--port",
                "0",
                "--state-dir",
                str(state_dir),
                *args,
            ],
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        listening = wait_for(lambda: self.event("serve.listening") or self._died(), 60, "start")
        self.url = listening["url"]

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def _died(self) -> None:
        if self.proc.poll() is not None:
            time.sleep(0.2)
            raise AssertionError(f"serve exited {self.proc.returncode}: {''.join(self.lines)}")

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if name is None or record.get("event") == name:
                out.append(record)
        return out

    def event(self, name: str) -> dict[str, Any] | None:
        found = self.events(name)
        return found[0] if found else None

    def post(self, payload: Any, secret: str | None = SECRET, raw: bytes | None = None):
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["X-Webhook-Secret"] = secret
        body = raw if raw is not None else json.dumps(payload).encode()
        status, _, answer = http("POST", self.url + "/webhook", body, headers)
        return status, json.loads(answer or b"null")

    def get_json(self, path: str) -> Any:
        status, _, body = http("GET", self.url + path, headers=OPERATOR)
        assert status == 200, (status, body)
        return json.loads(body)

    def jobs(self) -> list[dict[str, Any]]:
        out, path = [], "/runs?limit=200"
        while path:
            page = self.get_json(path)
            out += page["runs"]
            path = page["next"]
        return out

    def job(self, job_id: int) -> dict[str, Any]:
        return next(j for j in self.jobs() if j["id"] == job_id)

    def wait_final(self, job_ids: list[int], timeout: float = 90.0) -> list[dict[str, Any]]:
        def final() -> list[dict[str, Any]] | None:
            jobs = {j["id"]: j for j in self.jobs()}
            done = [jobs[i] for i in job_ids if jobs[i]["status"] not in ("queued", "running")]
            return done if len(done) == len(job_ids) else None

        return wait_for(final, timeout, f"jobs {job_ids}", every=0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._reader.join(timeout=5)


def make_adapter_repo(hub: HubServer, repo: str, tmp: Path, seed: int = 0, **extra: Any) -> str:
    directory = llama_like_adapter(tmp / repo.replace("/", "--"), n_layers=2, d=16, r=4, seed=seed)
    return hub.create_repo(repo, {**adapter_files(directory), **extra}, owner="alice")


@pytest.fixture(scope="module")
def hub():
    server = HubServer()
    server.add_user("alice", "hf_alice_write_token", write=True)
    server.add_user(BOT, BOT_TOKEN, write=True)
    with server:
        yield server
    assert not server.internal_errors, "\n".join(server.internal_errors)


@pytest.fixture(scope="module")
def service(hub: HubServer, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("serve")
    (tmp / "serve.yaml").write_text(CONFIG)
    svc = Service(hub, tmp / "state", "--config", str(tmp / "serve.yaml"))
    yield svc
    svc.stop()
    logs = "".join(svc.lines)
    assert BOT_TOKEN not in logs and SECRET not in logs and STATUS_TOKEN not in logs


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("adapters")


# --------------------------------------------------------------------------- end to end


def test_hub_webhook_opens_one_pr_and_our_pr_commit_does_not_loop(
    hub: HubServer,
    service: Service,
    module_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    from gradience_hub.cli import main

    make_adapter_repo(hub, "alice/adapter", module_tmp)
    # register the service with the Hub through the CLI, as the README says
    configure_client(monkeypatch, hub, tmp_path / "hf", token="hf_alice_write_token")
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    with pytest.raises(SystemExit) as done:
        main(["webhook", "create", "--watch", "user:alice", "--url", service.url + "/webhook"])
    assert done.value.code == 0, capsys.readouterr()
    hook = next(iter(hub.webhooks.hooks.values()))
    assert hook.secret == SECRET and hook.domains == ["repo"] and hook.owner == "alice"
    assert SECRET not in capsys.readouterr().out

    sha = hub.push("alice/adapter", {"notes.txt": "v2"}, message="retrain")
    hub.webhooks.wait_idle()
    first = hub.webhooks.delivered("alice/adapter")[0]
    assert first.status == 202 and first.payload["updatedRefs"][0]["newSha"] == sha
    job_id = json.loads(first.body)["job_id"]
    (job,) = service.wait_final([job_id])
    prs = hub.prs("alice/adapter")
    assert job["status"] == "done", job
    assert len(prs) == 1 and job["pr_url"].endswith(f"/discussions/{prs[0].num}")
    files = hub.files("alice/adapter", prs[0].ref)
    assert "<!-- gradience:start -->" in files["README.md"].decode()
    assert {"gradience/audit.json", "gradience/utilization.png"} <= set(files)
    assert json.loads(files["gradience/audit.json"])["source"]["sha"] == sha
    assert hub.commits("alice/adapter", prs[0].ref)[1].oid == sha  # the PR branches from the push

    # our PR commit fired a refs/pr/N webhook, which the service acknowledged and ignored
    hub.webhooks.wait_idle()
    later = hub.webhooks.delivered("alice/adapter")[1:]
    assert [d.payload["updatedRefs"][0]["ref"] for d in later] == [prs[0].ref]
    assert later[0].status == 200 and json.loads(later[0].body)["status"] == "ignored"
    time.sleep(0.5)
    assert len(hub.commits("alice/adapter", prs[0].ref)) == 3  # initial, push, ours: no loop
    assert len(hub.webhooks.delivered("alice/adapter")) == 2
    assert len(hub.prs("alice/adapter")) == 1


def test_direct_commit_fires_one_more_event_that_changes_nothing(
    hub: HubServer, service: Service, module_tmp: Path
) -> None:
    make_adapter_repo(hub, "direct/adapter", module_tmp, seed=1)
    hub.grant_write("direct/adapter", BOT)
    hub.webhooks.add(
        "direct", service.url + "/webhook", [{"type": "org", "name": "direct"}], SECRET, ["repo"]
    )
    sha = hub.push("direct/adapter", {"notes.txt": "v2"})
    hub.webhooks.wait_idle()
    job_id = json.loads(hub.webhooks.delivered("direct/adapter")[0].body)["job_id"]
    service.wait_final([job_id])
    # our commit to main is a push too: one more job, which finds the card current
    wait_for(lambda: len(hub.webhooks.delivered("direct/adapter")) == 2, 30, "second delivery")
    hub.webhooks.wait_idle()
    second = hub.webhooks.delivered("direct/adapter")[1]
    assert second.status == 202
    (again,) = service.wait_final([json.loads(second.body)["job_id"]])
    assert again["status"] == "done" and again["detail"] == "up to date: nothing to commit"
    time.sleep(0.5)
    history = hub.commits("direct/adapter")
    assert history[1].oid == sha and history[0].author == BOT and len(history) == 3
    assert "<!-- gradience:start -->" in hub.read("direct/adapter", "README.md").decode()
    assert hub.prs("direct/adapter") == []
    assert len(hub.webhooks.delivered("direct/adapter")) == 2


def test_replay_of_a_handled_event_makes_no_request_to_the_hub(
    hub: HubServer, service: Service, module_tmp: Path
) -> None:
    sha = make_adapter_repo(hub, "alice/replayed", module_tmp, seed=2)
    status, answer = service.post(push_payload("alice/replayed", sha))
    assert status == 202
    service.wait_final([answer["job_id"]])
    before = len(hub.requests)
    status, again = service.post(push_payload("alice/replayed", sha))
    assert status == 200 and again["status"] == "ignored" and again["job_id"] == answer["job_id"]
    assert "duplicate" in again["reason"]
    time.sleep(0.3)
    assert len(hub.requests) == before
    assert len(hub.prs("alice/replayed")) == 1


def test_a_push_delivered_after_its_successor_never_runs(
    hub: HubServer, service: Service, module_tmp: Path
) -> None:
    first = make_adapter_repo(hub, "late/adapter", module_tmp, seed=7)
    second = hub.push("late/adapter", {"notes.txt": "v2"})
    third = hub.push("late/adapter", {"notes.txt": "v3"})
    status, newest = service.post(push_payload("late/adapter", third, old=second))
    assert status == 202
    status, late = service.post(push_payload("late/adapter", second, old=first))
    assert status == 200 and late["status"] == "ignored"
    assert late["reason"].startswith(f"superseded by {third[:7]} (job {newest['job_id']})")
    (job,) = service.wait_final([newest["job_id"]])
    assert job["status"] == "done" and job["old_sha"] == second
    (pr,) = hub.prs("late/adapter")
    assert hub.commits("late/adapter", pr.ref)[1].oid == third


def test_missing_or_wrong_secret_is_refused_and_nothing_is_written(
    hub: HubServer, service: Service, module_tmp: Path
) -> None:
    sha = make_adapter_repo(hub, "alice/secret", module_tmp, seed=3)
    total = service.get_json("/runs")["total"]
    mutations = len(hub.mutations())
    status, answer = service.post(push_payload("alice/secret", sha), secret=None)
    assert status == 401 and "missing" in answer["error"]
    status, answer = service.post(push_payload("alice/secret", sha), secret=SECRET + "x")
    assert status == 403 and "wrong" in answer["error"]
    status, _ = service.post(push_payload("alice/secret", sha), secret=SECRET[:-1])
    assert status == 403
    time.sleep(0.3)
    assert service.get_json("/runs")["total"] == total
    assert len(hub.mutations()) == mutations and hub.prs("alice/secret") == []


def test_events_that_are_not_pushes_to_the_watched_branch_are_ignored(
    hub: HubServer, service: Service
) -> None:
    sha = "a" * 40
    pr_update = push_payload("alice/adapter", sha, "refs/pr/1")
    discussion = push_payload("alice/adapter", sha, scope="discussion", action="create")
    comment = push_payload("alice/adapter", sha, scope="discussion.comment", action="create")
    other_branch = push_payload("alice/adapter", sha, "refs/heads/dev")
    tag = push_payload("alice/adapter", sha, "refs/tags/v1")
    dataset = push_payload("alice/data", sha, repo_type="dataset")
    space = push_payload("alice/space", sha, repo_type="space")
    no_rule = push_payload("someone/adapter", sha)
    deleted = push_payload("alice/adapter", "0" * 40)
    no_refs = push_payload("alice/adapter", sha)
    del no_refs["updatedRefs"]
    total = service.get_json("/runs")["total"]
    reasons = {}
    for name, payload in [
        ("pr", pr_update),
        ("discussion", discussion),
        ("comment", comment),
        ("branch", other_branch),
        ("tag", tag),
        ("dataset", dataset),
        ("space", space),
        ("no_rule", no_rule),
        ("deleted", deleted),
        ("no_refs", no_refs),
    ]:
        status, answer = service.post(payload)
        assert status == 200 and answer["status"] == "ignored", (name, answer)
        reasons[name] = answer["reason"]
    assert "pull request" in reasons["pr"] and "refs/pr/1" in reasons["pr"]
    assert reasons["discussion"].startswith("event discussion.create")
    assert "refs/heads/dev" in reasons["branch"] and "refs/heads/main" in reasons["branch"]
    assert "dataset" in reasons["dataset"] and "space" in reasons["space"]
    assert "no rule" in reasons["no_rule"] and "deleted" in reasons["deleted"]
    assert service.get_json("/runs")["total"] == total


def test_bad_bodies_get_400_with_the_reason_and_big_ones_413(service: Service) -> None:
    status, answer = service.post(None, raw=b'{"event": ')
    assert status == 400 and answer["error"].startswith("malformed JSON")
    status, answer = service.post({"event": {"action": "update"}})
    assert status == 400 and answer["error"] == "the payload has no event.scope"
    payload = push_payload("alice/adapter", "a" * 40)
    del payload["repo"]["name"]
    status, answer = service.post(payload)
    assert status == 400 and answer["error"] == "the payload has no repo.name"
    status, answer = service.post(push_payload("alice/adapter", "not-a-sha"))
    assert status == 400 and "newSha" in answer["error"]
    status, answer = service.post(push_payload("../../etc/passwd", "a" * 40))
    assert status == 400 and "repo id" in answer["error"]
    # over 1 MB: 413 from the headers alone, before the body is read (a raw socket, because a
    # client still writing the body may see the connection close under it)
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(service.url)
    with socket.create_connection((where.hostname, where.port), timeout=30) as sock:
        sock.sendall(
            b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"X-Webhook-Secret: {SECRET}\r\nContent-Length: {1024 * 1024 + 1}\r\n\r\n".encode()
            + b"{" * 1000
        )
        answer_bytes = sock.recv(65536)
    assert answer_bytes.startswith(b"HTTP/1.1 413 ")
    status, answer = service.post(None, raw=b" " * (1024 * 1024 - 2) + b"{}")
    assert status == 400  # exactly 1 MB is read (and is no payload)
    status, answer = service.post(None, raw=b"[]")
    assert status == 400


def test_a_repo_without_an_adapter_is_recorded_as_skipped(hub: HubServer, service: Service) -> None:
    sha = hub.create_repo("alice/full-model", {"config.json": "{}", "README.md": "# hi\n"})
    status, answer = service.post(push_payload("alice/full-model", sha))
    assert status == 202
    (job,) = service.wait_final([answer["job_id"]])
    assert job["status"] == "skipped" and job["detail"].startswith("not an adapter")
    assert hub.prs("alice/full-model") == []


def test_hub_503s_are_retried_after_retry_after(
    hub: HubServer, service: Service, module_tmp: Path
) -> None:
    sha = make_adapter_repo(hub, "alice/flaky", module_tmp, seed=4)
    fault = hub.inject(
        "POST",
        r"^/api/models/alice/flaky/commit/",
        status=503,
        times=2,
        headers={"Retry-After": "1"},
    )
    _, answer = service.post(push_payload("alice/flaky", sha))
    (job,) = service.wait_final([answer["job_id"]])
    assert fault.hits == 2
    assert job["status"] == "done" and job["attempts"] == 3
    assert job["finished_at"] - job["created_at"] >= 2.0  # two Retry-After: 1 waits
    retries = [e for e in service.events("job.retry") if e["job"] == job["id"]]
    assert [r["delay"] for r in retries] == [1.0, 1.0]
    assert len(hub.prs("alice/flaky")) == 1


def test_permanent_failures_are_recorded_not_retried_and_the_page_escapes_them(
    hub: HubServer, service: Service, module_tmp: Path
) -> None:
    status, answer = service.post(push_payload("alice/does-not-exist", "b" * 40))
    (missing,) = service.wait_final([answer["job_id"]])
    assert missing["status"] == "failed" and missing["attempts"] == 1
    assert "not found" in missing["detail"]

    sha = make_adapter_repo(hub, "alice/hostile", module_tmp, seed=5)
    hostile = "<script>alert('x')</script>"
    hub.inject(
        "POST",
        r"^/api/models/alice/hostile/preupload/",
        status=403,
        body={"error": hostile},
        headers={"X-Error-Message": hostile},
    )
    status, answer = service.post(push_payload("alice/hostile", sha))
    (job,) = service.wait_final([answer["job_id"]])
    assert job["status"] == "failed" and job["attempts"] == 1 and hostile in job["detail"]
    status, _, page = http("GET", service.url + "/", headers=OPERATOR)
    text = page.decode()
    assert status == 200 and "<script>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "alice/hostile" in text and hub.prs("alice/hostile") == []


def test_a_bench_json_named_by_the_config_is_published(
    hub: HubServer, service: Service, module_tmp: Path
) -> None:
    bench = (GOLDEN / "bench_pass.json").read_bytes()
    sha = make_adapter_repo(hub, "bench/adapter", module_tmp, seed=6, **{"eval/bench.json": bench})
    _, answer = service.post(push_payload("bench/adapter", sha))
    (job,) = service.wait_final([answer["job_id"]])
    assert job["status"] == "done" and "PASS" in job["detail"], job
    (pr,) = hub.prs("bench/adapter")
    files = hub.files("bench/adapter", pr.ref)
    assert json.loads(files["gradience/bench.json"])["status"] == "PASS"
    assert pr.title.startswith("Gradience audit: PASS")


def test_a_burst_of_200_events_for_20_repos_ends_with_one_pr_each(
    hub: HubServer, service: Service, module_tmp: Path
) -> None:
    shas: dict[str, list[str]] = {}
    first: dict[str, str] = {}
    for i in range(20):
        repo = f"burst/adapter-{i:02d}"
        first[repo] = make_adapter_repo(hub, repo, module_tmp, seed=i)
        shas[repo] = [hub.push(repo, {"notes.txt": f"v{k}"}) for k in range(10)]
    events = [(repo, sha) for repo, pushed in shas.items() for sha in pushed]

    def deliver(repo: str) -> list[tuple[int, Any]]:  # the Hub delivers a repo's pushes in order
        chain = [first[repo], *shas[repo]]
        return [
            service.post(push_payload(repo, new, old=old)) for old, new in itertools.pairwise(chain)
        ]

    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        answers = [a for per_repo in pool.map(deliver, shas) for a in per_repo]
    elapsed = time.monotonic() - start
    assert elapsed < 10, f"200 events took {elapsed:.1f}s"
    assert [status for status, _ in answers] == [202] * 200
    ids = [answer["job_id"] for _, answer in answers]
    assert len(set(ids)) == 200  # no event lost or merged
    jobs = service.wait_final(ids, timeout=240)
    by_key = {(j["repo"], j["sha"]): j for j in jobs}
    for repo, pushed in shas.items():
        assert by_key[(repo, pushed[-1])]["status"] == "done"  # the newest push always runs
        for sha in pushed[:-1]:
            older = by_key[(repo, sha)]
            assert older["status"] == "done" or older["detail"].startswith("superseded by")
        (pr,) = hub.prs(repo)
        audit = json.loads(hub.read(repo, "gradience/audit.json", pr.ref))
        assert audit["source"]["repo_id"] == repo
    # replaying the whole burst is answered from the queue alone
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda e: service.post(push_payload(*e)), events))
    assert all(s == 200 and a["status"] == "ignored" for s, a in replies)


def test_healthz_and_paginated_runs(service: Service) -> None:
    health = service.get_json("/healthz")
    assert health["status"] == "ok" and health["workers"] == 1
    assert health["queue_depth"] == health["counts"]["queued"] + health["counts"]["running"]
    first = service.get_json("/runs?limit=2")
    assert len(first["runs"]) == 2 and first["runs"][0]["id"] > first["runs"][1]["id"]
    second = service.get_json(first["next"])
    assert second["offset"] == 2 and second["runs"][0]["id"] < first["runs"][1]["id"]
    assert http("GET", service.url + "/runs?limit=0", headers=OPERATOR)[0] == 400
    everything = json.dumps(service.jobs())
    assert BOT_TOKEN not in everything and SECRET not in everything


def test_a_second_service_on_the_same_state_dir_exits_2(hub: HubServer, service: Service) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gradience_hub",
            "serve",
            "--port",
            "0",
            "--state-dir",
            str(service.state_dir),
        ],
        env=hub.subprocess_env(token=BOT_TOKEN, WEBHOOK_SECRET=SECRET, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "another gradience-hub serve" in out.stderr


# --------------------------------------------------------------------------- restarts


def test_queued_and_running_jobs_survive_kill_9_and_run_once_each(
    hub: HubServer, module_tmp: Path, tmp_path: Path
) -> None:
    shas = {
        repo: make_adapter_repo(hub, repo, module_tmp, seed=10 + i)
        for i, repo in enumerate(["kill/a", "kill/b", "kill/c", "kill/d"])
    }
    # kill/d: its PR was opened, then the service died before recording it (job left running)
    published = subprocess.run(
        [sys.executable, "-m", "gradience_hub", "annotate", "kill/d", "--revision", shas["kill/d"]],
        env=hub.subprocess_env(token=BOT_TOKEN, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert published.returncode == 0, published.stderr
    state = tmp_path / "state"
    (tmp_path / "serve.yaml").write_text(CONFIG)
    config = ["--config", str(tmp_path / "serve.yaml")]
    queue = JobQueue(state)
    queue.enqueue("kill/d", shas["kill/d"], "refs/heads/main")
    queue.close()

    paused = Service(hub, state, "--workers", "0", *config)
    ids = []
    for repo in ("kill/a", "kill/b", "kill/c"):
        status, answer = paused.post(push_payload(repo, shas[repo]))
        assert status == 202
        ids.append(answer["job_id"])
    assert [j["status"] for j in paused.jobs()] == ["queued"] * 4
    before = len(hub.mutations())
    paused.kill()
    assert len(hub.mutations()) == before
    # the state a process killed in the middle of kill/d's job leaves behind
    queue = JobQueue(state)
    running = queue.claim()
    assert running is not None and running.repo == "kill/d" and running.status == "running"
    queue.close()

    restarted = Service(hub, state, *config)
    try:
        assert restarted.event("serve.listening")["recovered"] == 1
        jobs = restarted.wait_final([running.id, *ids])
        assert [j["status"] for j in jobs] == ["done"] * 4, jobs
        assert [j["attempts"] for j in jobs] == [2, 1, 1, 1]
        for repo in shas:
            (pr,) = hub.prs(repo)
            ours = [c for c in hub.commits(repo, pr.ref) if c.author == BOT]
            assert len(ours) == 1, repo  # none twice
        assert jobs[0]["detail"] == "up to date: nothing to commit"
    finally:
        restarted.stop()


def test_insecure_mode_warns_and_accepts_without_a_secret(hub: HubServer, tmp_path: Path) -> None:
    env = {"WEBHOOK_SECRET": ""}
    svc = Service(
        hub,
        tmp_path / "state",
        "--insecure-no-secret",
        "--workers",
        "0",
        "--max-queue",
        "2",
        **env,
    )
    try:
        warning = svc.event("serve.insecure")
        assert warning and warning["level"] == "warning" and "ANYONE" in warning["message"]
        for repo in ("alice/adapter", "alice/other"):
            status, answer = svc.post(push_payload(repo, "c" * 40), secret=None)
            assert status == 202 and answer["status"] == "queued"
        # the queue is full: 503, but a newer push of a queued repo replaces its job
        status, answer = svc.post(push_payload("alice/third", "c" * 40), secret=None)
        assert status == 503 and "full" in answer["error"]
        status, answer = svc.post(push_payload("alice/other", "d" * 40), secret=None)
        assert status == 202
        assert svc.get_json("/healthz")["queue_depth"] == 2
    finally:
        svc.stop()


def test_start_up_errors_exit_2(hub: HubServer, tmp_path: Path) -> None:
    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        environ = hub.subprocess_env(token=BOT_TOKEN, PYTHONPATH=str(ROOT))
        environ.pop("WEBHOOK_SECRET", None)
        environ.update(env)
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "gradience_hub",
                "serve",
                "--port",
                "0",
                "--state-dir",
                str(tmp_path / "s"),
                *args,
            ],
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
        )

    out = run()
    assert out.returncode == 2 and "WEBHOOK_SECRET is not set" in out.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("repos:\n  - match: 'org/*'\n    dirct: true\n")
    out = run("--config", str(bad), WEBHOOK_SECRET=SECRET)
    assert out.returncode == 2 and "unknown key repos[0].dirct" in out.stderr
    assert "Traceback" not in out.stderr


def test_once_runs_the_event_in_webhook_payload(
    hub: HubServer, module_tmp: Path, tmp_path: Path
) -> None:
    sha = make_adapter_repo(hub, "alice/once", module_tmp, seed=20)

    def once(payload: str | None) -> subprocess.CompletedProcess[str]:
        env = hub.subprocess_env(token=BOT_TOKEN, PYTHONPATH=str(ROOT))
        if payload is not None:
            env["WEBHOOK_PAYLOAD"] = payload
        return subprocess.run(
            [sys.executable, "-m", "gradience_hub", "serve", "--once"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )

    out = once(json.dumps(push_payload("alice/once", sha)))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    (pr,) = hub.prs("alice/once")
    assert result["status"] == "done" and result["pr_url"].endswith(f"/discussions/{pr.num}")
    out = once(json.dumps(push_payload("alice/once", sha, "refs/pr/1")))
    assert out.returncode == 0 and json.loads(out.stdout)["status"] == "ignored"
    out = once(None)
    assert out.returncode == 2 and "WEBHOOK_PAYLOAD is not set" in out.stderr
    out = once("{not json")
    assert out.returncode == 2 and "WEBHOOK_PAYLOAD" in out.stderr
    assert BOT_TOKEN not in out.stderr + out.stdout


# --------------------------------------------------------------------------- webhook CLI


def test_webhook_create_list_delete(
    hub: HubServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    from gradience_hub.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as done:
            main(list(args))
        out, err = capsys.readouterr()
        return int(done.value.code or 0), out, err

    configure_client(monkeypatch, hub, tmp_path / "hf", token=BOT_TOKEN)
    monkeypatch.delenv("WEBHOOK_SECRET", raising=False)
    code, _, err = run("webhook", "create", "--watch", "org:acme", "--url", "http://x/webhook")
    assert code == 2 and "WEBHOOK_SECRET" in err
    monkeypatch.setenv("WEBHOOK_SECRET", "s3cret-value")
    code, out, _ = run(
        "webhook",
        "create",
        "--watch",
        "org:acme",
        "--watch",
        "model:o/n",
        "--url",
        "https://serve.example/webhook",
    )
    assert code == 0 and out.startswith("Created webhook ")
    hook_id = out.split()[2]
    stored = hub.webhooks.hooks[hook_id]
    assert stored.owner == BOT and stored.secret == "s3cret-value"
    assert stored.watched == [{"type": "org", "name": "acme"}, {"type": "model", "name": "o/n"}]
    code, out, _ = run("webhook", "list")
    assert code == 0 and hook_id in out and "org:acme,model:o/n" in out
    assert "s3cret" not in out
    code, out, _ = run("webhook", "list", "--json")
    listed = json.loads(out)
    assert [h["id"] for h in listed] == [hook_id] and listed[0]["has_secret"] is True
    assert "s3cret" not in out
    code, out, _ = run("webhook", "create", "--watch", "team:x", "--url", "https://a/webhook")
    assert code == 2
    code, out, _ = run("webhook", "delete", hook_id)
    assert code == 0 and hook_id not in hub.webhooks.hooks
    code, _, err = run("webhook", "delete", hook_id)
    assert code == 3 and "404" in err


# --------------------------------------------------------------------------- pure parts


def test_decide_reads_the_raw_json_and_the_watched_branch() -> None:
    config = ServeConfig.from_dict({"watch": {"branch": "release"}})
    payload = push_payload("org/a", "d" * 40, "refs/heads/release")
    decision = route_event(payload, config)
    assert decision.queued and (decision.repo, decision.sha) == ("org/a", "d" * 40)
    assert decision.webhook_id == "65d6e2ab0bc0ec17b2cbd5a4"
    assert not route_event(push_payload("org/a", "d" * 40), config).queued
    # both refs in one push: the watched one is found wherever it is in the list
    payload["updatedRefs"].insert(0, {"ref": "refs/tags/v1", "newSha": "e" * 40})
    assert route_event(payload, config).sha == "d" * 40
    with pytest.raises(PayloadError, match=r"event\.action"):
        route_event({"event": {}}, config)
    with pytest.raises(PayloadError, match="JSON object"):
        route_event([], config)


def test_config_rules_first_match_wins_and_errors_name_the_key(tmp_path: Path) -> None:
    config = ServeConfig.from_dict(
        {"repos": [{"match": "Org/prod-*", "direct": True}, {"match": "org/*"}]}
    )
    assert config.rule_for("org/prod-x").direct is True  # case-insensitive, first match
    assert config.rule_for("org/dev").direct is False
    assert config.rule_for("other/x") is None
    assert ServeConfig.from_dict(None).rule_for("any/thing") is not None
    cases = {
        "watch: {brnch: main}": "watch.brnch",
        "colour: red": "colour",
        "repos: [{direct: true}]": "repos[0].match",
        "repos: [{match: 'a/*', direct: 'yes'}]": "repos[0].direct",
        "repos: [{match: 'a/*'}, {match: b/*, bench_json: x.json, bench_config: y.yaml}]": (
            "repos[1].bench_json"
        ),
        "repos: [{match: 'a/*', bench_json: ../x.json}]": "repos[0].bench_json",
        "repos: [{match: 'a/*', bench_config: /nonexistent.yaml}]": "repos[0].bench_config",
        "repos: []": "repos",
        "watch: {branch: 'refs/pr/1'}": "watch.branch",
    }
    for text, key in cases.items():
        path = tmp_path / "c.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert info.value.key == key, text
        assert info.value.exit_code == 2


def test_queue_dedups_supersedes_and_bounds(tmp_path: Path) -> None:
    queue = JobQueue(tmp_path)
    first = queue.enqueue("o/a", "1" * 40, "refs/heads/main", now=1.0)
    assert first.created
    assert not queue.enqueue("o/a", "1" * 40, "refs/heads/main").created
    second = queue.enqueue("o/a", "2" * 40, "refs/heads/main", now=2.0)
    assert second.superseded == (first.job.id,)
    old = queue.get(first.job.id)
    assert old is not None and old.status == "skipped" and old.detail.startswith("superseded")
    queue.enqueue("o/b", "3" * 40, "refs/heads/main", max_queue=2)
    with pytest.raises(QueueFull):
        queue.enqueue("o/c", "4" * 40, "refs/heads/main", max_queue=2)
    # a push delivered after its successor (which names it as oldSha) never runs
    late_next = queue.enqueue("o/late", "8" * 40, "refs/heads/main", old_sha="7" * 40)
    late = queue.enqueue("o/late", "7" * 40, "refs/heads/main", old_sha="9" * 40)
    assert late.created and late.job.status == "skipped" and late.superseded == ()
    assert late.job.detail.startswith(f"superseded by 8888888 (job {late_next.job.id})")
    assert queue.get(late_next.job.id).status == "queued"  # type: ignore[union-attr]
    queue.finish(late_next.job.id, "done", "test")
    # a push that supersedes a queued job of its repo does not grow the queue
    assert queue.enqueue("o/b", "5" * 40, "refs/heads/main", max_queue=2).created
    # one running job per repo, whatever the number of workers
    claimed = queue.claim()
    assert claimed is not None and claimed.repo == "o/a"
    queue.enqueue("o/a", "6" * 40, "refs/heads/main")
    nxt = queue.claim()
    assert nxt is not None and nxt.repo == "o/b"
    assert queue.claim() is None  # o/a's new job waits for its running one
    # a failed attempt backs off, unless a newer push of its repo arrived meanwhile
    assert queue.retry(claimed.id, 60.0, "the Hub answered 503") is False
    superseded = queue.get(claimed.id)
    assert superseded is not None and superseded.status == "skipped"
    again = queue.claim()
    assert again is not None and again.sha == "6" * 40
    assert queue.retry(nxt.id, 60.0, "the Hub answered 503") is True
    assert queue.next_due() == pytest.approx(time.time() + 60, abs=5)
    assert queue.claim() is None  # o/b backs off
    assert queue.recover().requeued == (again.id,) and queue.counts() == {
        "queued": 2,
        "running": 0,
        "done": 1,
        "failed": 0,
        "skipped": 4,
    }


def test_backoff_and_adapter_listing_rules() -> None:
    assert backoff(1, 2.0, None) == 2.0 and backoff(3, 2.0, None) == 8.0
    assert backoff(1, 2.0, 7.0) == 7.0 and backoff(9, 2.0, None) == 300.0
    assert is_adapter_listing(["adapter_config.json"])
    assert is_adapter_listing(["sub/adapter_model.safetensors"])
    assert is_adapter_listing(["pytorch_lora_weights.safetensors"])
    assert is_adapter_listing(["my_style_lora.safetensors"])
    assert not is_adapter_listing(["model.safetensors", "config.json", "README.md"])


def test_status_page_escapes_every_repo_string() -> None:
    from gradience_hub.serve.queue import Job

    hostile = "evil/<img src=x onerror=alert(1)>"
    job = Job(
        id=1,
        repo=hostile,
        sha="f" * 40,
        ref="refs/heads/main",
        old_sha=None,
        status="failed",
        attempts=1,
        created_at=0.0,
        updated_at=0.0,
        started_at=None,
        finished_at=None,
        not_before=None,
        webhook_id=None,
        pr_url="javascript:alert(1)",
        commit_url=None,
        detail="<b>boom</b>",
    )
    page = status_page([job], {"queued": 0})
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<b>boom" not in page and "javascript:" not in page


def test_the_space_folder_is_a_docker_space_running_serve() -> None:
    import re
    import shlex

    import yaml

    readme = (ROOT / "space" / "README.md").read_text()
    front = yaml.safe_load(readme.split("---\n")[1])
    assert front["sdk"] == "docker" and isinstance(front["app_port"], int)
    dockerfile = (ROOT / "space" / "Dockerfile").read_text()
    # what is installed: the GRADIENCE_HUB build argument (the release by default; CI's image
    # build passes its wheel), by the one RUN line that calls pip
    default = re.search(r'^ARG GRADIENCE_HUB="([^"]+)"$', dockerfile, re.M)
    assert default is not None and default.group(1).startswith("gradience-hub[serve]==")
    install = next(line for line in dockerfile.splitlines() if "pip install" in line)
    assert install.startswith("RUN ") and '"${GRADIENCE_HUB}"' in install
    assert "torch" not in install.split("&&")[1]
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))  # type: ignore[union-attr]
    argv = shlex.split(cmd[-1].removeprefix("exec "))
    assert argv[:2] == ["gradience-hub", "serve"]
    assert argv[argv.index("--port") + 1] in (
        str(front["app_port"]),
        f"${{PORT:-{front['app_port']}}}",
    )
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    config = load_config(ROOT / "space" / argv[argv.index("--config") + 1])
    assert config.watch.ref == "refs/heads/main" and config.rule_for("any/adapter") is not None


def test_stand_in_webhooks_speak_the_client_api_and_send_v3_payloads(
    hub: HubServer, service: Service, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from huggingface_hub import HfApi, WebhookPayload, WebhookWatchedItem

    configure_client(monkeypatch, hub, tmp_path / "hf", token="hf_alice_write_token")
    api = HfApi()
    hook = api.create_webhook(
        url=service.url + "/webhook",
        watched=[WebhookWatchedItem(type="model", name="hooks/adapter")],
        secret=SECRET,
    )
    assert hook.domains == ["repo", "discussion"] and not hook.disabled
    assert api.get_webhook(hook.id).url == service.url + "/webhook"
    assert api.disable_webhook(hook.id).disabled
    hub.create_repo("hooks/adapter", {"README.md": "# x\n"})
    hub.push("hooks/adapter", {"a.txt": "1"})
    hub.webhooks.wait_idle()
    assert hub.webhooks.delivered("hooks/adapter") == []  # disabled: nothing sent
    assert not api.enable_webhook(hook.id).disabled
    sha = hub.push("hooks/adapter", {"a.txt": "2"})
    hub.open_pr("hooks/adapter", {"b.txt": "x"}, author="alice")  # seeding sends nothing
    hub.webhooks.wait_idle()
    (push,) = hub.webhooks.delivered("hooks/adapter")
    parsed = WebhookPayload.model_validate(push.payload)  # the client's own model of v3
    assert parsed.event.scope == "repo.content" and parsed.webhook.version == 3
    assert parsed.updatedRefs and parsed.updatedRefs[0].newSha == sha
    assert push.payload["repo"]["headSha"] == sha and parsed.repo.head_sha is None  # no alias
    assert push.status == 200 and "no rule" in json.loads(push.body)["reason"]
    # a PR opened through the client: its ref update, and a discussion event for the PR
    from huggingface_hub import CommitOperationAdd

    api.create_commit(
        "hooks/adapter",
        [CommitOperationAdd(path_in_repo="c.txt", path_or_fileobj=b"c")],
        commit_message="Add c",
        create_pr=True,
    )
    hub.webhooks.wait_idle()
    ref_update, opened = (
        WebhookPayload.model_validate(d.payload)
        for d in hub.webhooks.delivered("hooks/adapter")[1:]
    )
    num = hub.prs("hooks/adapter")[0].num
    assert ref_update.updatedRefs and ref_update.updatedRefs[0].ref == f"refs/pr/{num}"
    assert opened.event.scope == "discussion" and opened.event.action == "create"
    assert opened.discussion and opened.discussion.isPullRequest and opened.discussion.num == num
    replies = [json.loads(d.body) for d in hub.webhooks.delivered("hooks/adapter")[1:]]
    assert [r["status"] for r in replies] == ["ignored", "ignored"]
    updated = api.update_webhook(
        hook.id, watched=[WebhookWatchedItem(type="org", name="hooks")], domains=["repo"]
    )
    assert [(w.type, w.name) for w in updated.watched] == [("org", "hooks")]
    assert hook.id in [h.id for h in api.list_webhooks()]
    api.delete_webhook(hook.id)
    assert hook.id not in [h.id for h in api.list_webhooks()]


def test_serve_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from gradience_hub.errors import MissingExtraError
    from gradience_hub.serve.server import require_serve_extra

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a)
    )
    with pytest.raises(MissingExtraError) as info:
        require_serve_extra()
    assert info.value.exit_code == 2 and "gradience-hub[serve]" in (info.value.hint or "")
