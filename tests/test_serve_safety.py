"""`gradience-hub serve` against issue 19: tokens echoed by the Hub, who may read the status pages,
a job that kills (or hangs) its process, pushes delivered out of order, deeply nested JSON.

The services are real `gradience-hub serve` subprocesses on 127.0.0.1 against the Hub stand-in
(tests/hubserver.py), driven with the helpers of tests/test_serve.py; the out-of-order test runs
the queue and the job in process against the same stand-in.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gradience_hub.serve import JobQueue, ServeConfig
from gradience_hub.serve.app import status_page
from gradience_hub.serve.config import ServeOptions
from gradience_hub.serve.log import EventLog, service_secrets
from gradience_hub.serve.queue import Job
from tests.factories import adapter_files, llama_like_adapter
from tests.hubserver import HubServer, configure_client
from tests.test_serve import (
    BOT,
    BOT_TOKEN,
    OPERATOR,
    ROOT,
    SECRET,
    STATUS_TOKEN,
    Service,
    http,
    make_adapter_repo,
    push_payload,
    wait_for,
)

CONFIG = """\
watch: {branch: main}
repos:
  - match: "alice/*"
  - match: "poison/*"
  - match: "order/*"
"""
MAIN = "refs/heads/main"


@pytest.fixture(scope="module")
def hub():
    server = HubServer()
    server.add_user("alice", "hf_alice_write_token", write=True)
    server.add_user(BOT, BOT_TOKEN, write=True)
    with server:
        yield server
    assert not server.internal_errors, "\n".join(server.internal_errors)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "serve.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def service(hub: HubServer, config_file: Path, tmp_path_factory: pytest.TempPathFactory):
    svc = Service(hub, tmp_path_factory.mktemp("serve") / "state", "--config", str(config_file))
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("adapters")


def state_bytes(state_dir: Path) -> bytes:
    """Every byte the service stored (the database, its WAL, the lock file)."""
    return b"".join(p.read_bytes() for p in sorted(state_dir.iterdir()) if p.is_file())


def children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def challenge(url: str) -> tuple[int, list[str], bytes]:
    """GET without credentials: the status, every WWW-Authenticate header, the body."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, [], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get_all("WWW-Authenticate") or [], exc.read()


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


# --------------------------------------------------------------------------- 1. the token


def test_a_token_echoed_by_the_hub_reaches_no_page_no_database_and_no_log(
    hub: HubServer, service: Service, module_tmp: Path
) -> None:
    echoed = (
        f"Invalid credentials in Authorization header (got 'Authorization: Bearer {BOT_TOKEN}')"
    )
    body_sha = make_adapter_repo(hub, "alice/echo-body", module_tmp, seed=1)
    header_sha = make_adapter_repo(hub, "alice/echo-header", module_tmp, seed=2)
    hub.inject(
        "POST", r"^/api/models/alice/echo-body/preupload/", status=401, body={"error": echoed}
    )
    hub.inject(
        "POST",
        r"^/api/models/alice/echo-header/preupload/",
        status=403,
        headers={"X-Error-Message": echoed},
    )
    ids = []
    for repo, sha in (("alice/echo-body", body_sha), ("alice/echo-header", header_sha)):
        status, answer = service.post(push_payload(repo, sha))
        assert status == 202, answer
        ids.append(answer["job_id"])
    jobs = service.wait_final(ids)
    for job in jobs:
        # the Hub's text is kept (it says what went wrong), the token in it is not
        assert job["status"] == "failed" and "Authorization: Bearer ***" in job["detail"], job
    status, _, runs = http("GET", service.url + "/runs", headers=OPERATOR)
    status_html, _, page = http("GET", service.url + "/", headers=OPERATOR)
    assert status == status_html == 200
    assert b"Bearer ***" in runs and b"Bearer ***" in page
    token = BOT_TOKEN.encode()
    assert token not in runs and token not in page
    assert token not in state_bytes(service.state_dir)
    failed = [e for e in service.events("job.failed") if e["job"] in ids]
    assert len(failed) == 2 and all("Bearer ***" in e["detail"] for e in failed)
    assert BOT_TOKEN not in "".join(service.lines)


def test_an_exception_repr_with_the_token_is_scrubbed_before_it_is_stored_or_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gradience_hub.serve import worker

    token = "hf_token_in_an_exception_repr_0123456789"
    secrets = service_secrets({"HF_TOKEN": token})
    stream = io.StringIO()
    log = EventLog(stream, secrets)
    queue = JobQueue(tmp_path / "state", scrub=secrets.scrub)
    queue.enqueue("o/a", "a" * 40, MAIN)
    job = queue.claim()
    assert job is not None

    def boom(*_: Any) -> worker.Outcome:
        headers = {"Authorization": f"Bearer {token}"}
        raise RuntimeError(headers)  # its str() is the dict's repr, token included

    monkeypatch.setattr(worker, "run_job", boom)
    options = ServeOptions(state_dir=tmp_path / "state")
    outcome = worker.attempt(job, ServeConfig().rule_for("o/a"), options, log)
    assert token in outcome.detail  # what the worker hands on still carries it...
    worker.record(queue, job, outcome, log)
    stored = queue.get(job.id)
    assert stored is not None and stored.status == "failed"
    # ...and what is stored, logged and served does not
    assert stored.detail == "internal error: RuntimeError: {'Authorization': 'Bearer ***'}"
    queue.close()
    assert token.encode() not in state_bytes(tmp_path / "state")
    lines = stream.getvalue()
    assert "Bearer ***" in lines and "RuntimeError" in lines and token not in lines
    assert token not in status_page([stored], {"failed": 1})
    # rows stored before scrubbing existed are scrubbed when served
    unscrubbed = Job(**{**stored.to_dict(), "detail": f"Bearer {token}"})
    assert unscrubbed.redacted(secrets.scrub).detail == "Bearer ***"


# --------------------------------------------------------------------------- 2. status pages


def test_status_pages_are_off_without_status_token_and_need_it_when_set(
    hub: HubServer, service: Service, config_file: Path, tmp_path: Path
) -> None:
    status, _ = service.post(push_payload("alice/private-thing", "e" * 40))
    assert status == 202
    # with STATUS_TOKEN: nothing without the credential, everything with it
    for path in ("/", "/runs"):
        status, challenges, body = challenge(service.url + path)
        assert status == 401 and b"alice/private-thing" not in body
        assert json.loads(body)["error"].startswith("the status pages need the operator's")
        assert challenges == [
            'Bearer realm="gradience-hub serve"',
            'Basic realm="gradience-hub serve", charset="UTF-8"',
        ]
        wrong = {"Authorization": f"Bearer {STATUS_TOKEN}x"}
        status, _, body = http("GET", service.url + path, headers=wrong)
        assert status == 401 and json.loads(body) == {"error": "the credential is wrong"}
        basic = base64.b64encode(f"anyone:{STATUS_TOKEN}".encode()).decode()
        for creds in (OPERATOR, {"Authorization": f"Basic {basic}"}):
            status, _, body = http("GET", service.url + path, headers=creds)
            assert status == 200 and b"alice/private-thing" in body
    status, _, body = http("GET", service.url + "/healthz")
    assert status == 200 and b"alice/" not in body
    # without STATUS_TOKEN: off, whatever the caller sends; /healthz and /webhook stay open
    off = Service(
        hub, tmp_path / "state", "--workers", "0", "--config", str(config_file), STATUS_TOKEN=""
    )
    try:
        assert off.event("serve.listening")["status_pages"] == "off"
        status, _ = off.post(push_payload("alice/private-thing", "e" * 40))
        assert status == 202
        for path in ("/", "/runs", "/runs?limit=5"):
            status, _, body = http("GET", off.url + path, headers=OPERATOR)
            assert status == 404 and b"alice/" not in body
            assert json.loads(body)["error"].startswith("the status pages are off")
        status, _, body = http("GET", off.url + "/healthz")
        assert status == 200 and json.loads(body)["counts"]["queued"] == 1
    finally:
        off.stop()
    short = subprocess.run(
        [sys.executable, "-m", "gradience_hub", "serve", "--state-dir", str(tmp_path / "s2")],
        env=hub.subprocess_env(
            token=BOT_TOKEN, WEBHOOK_SECRET=SECRET, STATUS_TOKEN="short", PYTHONPATH=str(ROOT)
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert short.returncode == 2 and "STATUS_TOKEN is shorter than 16" in short.stderr


# --------------------------------------------------------------------------- 3. poison jobs


def test_a_job_that_kills_the_service_is_failed_at_max_attempts_and_others_run(
    hub: HubServer, config_file: Path, module_tmp: Path, tmp_path: Path
) -> None:
    poison = make_adapter_repo(hub, "poison/adapter", module_tmp, seed=3)
    other = make_adapter_repo(hub, "alice/bystander", module_tmp, seed=4)
    later = make_adapter_repo(hub, "alice/later", module_tmp, seed=5)
    # the poison job's first Hub request hangs (for the whole test): the job is mid-run when
    # the service is killed, as when the platform kills it for memory or restarts it hung
    hub.gate("GET", r"^/api/models/poison/adapter/revision/", parties=1000, timeout=120)
    state = tmp_path / "state"
    args = ("--max-attempts", "2", "--config", str(config_file))

    def kill_during(svc: Service, job_id: int, attempt: int) -> None:
        wait_for(
            lambda: any(
                e["job"] == job_id and e["attempt"] == attempt for e in svc.events("job.started")
            ),
            30,
            f"attempt {attempt}",
        )
        kids = children(svc.proc.pid)
        assert kids  # the job process (and multiprocessing's resource tracker)
        svc.kill()  # SIGKILL the service alone
        # its job process notices and exits: nothing of a dead service publishes later
        wait_for(lambda: not any(alive(k) for k in kids), 15, "the orphaned job process")

    first = Service(hub, state, *args)
    status, answer = first.post(push_payload("poison/adapter", poison))
    assert status == 202
    poison_id = answer["job_id"]
    status, answer = first.post(push_payload("alice/bystander", other))
    assert status == 202  # queued behind the poison job, which holds the one worker
    bystander_id = answer["job_id"]
    kill_during(first, poison_id, attempt=1)

    second = Service(hub, state, *args)
    assert second.event("serve.listening")["recovered"] == 1
    # the interrupted job (its attempt counted) went to the back of the queue: the bystander,
    # queued after it, runs first instead of waiting behind it for ever
    (bystander,) = second.wait_final([bystander_id])
    assert bystander["status"] == "done" and bystander["attempts"] == 1
    kill_during(second, poison_id, attempt=2)

    third = Service(hub, state, *args)
    try:
        assert third.event("serve.listening")["gave_up"] == 1
        job = third.job(poison_id)
        assert job["status"] == "failed" and job["attempts"] == 2
        assert job["detail"].startswith("gave up after 2 attempts: the process stopped")
        status, answer = third.post(push_payload("alice/later", later))
        (after,) = third.wait_final([answer["job_id"]])
        assert after["status"] == "done"
        assert third.job(poison_id)["attempts"] == 2  # never claimed again
    finally:
        third.stop()
    assert hub.prs("poison/adapter") == []


def test_a_job_over_its_wall_clock_limit_is_failed_and_the_worker_moves_on(
    hub: HubServer, config_file: Path, module_tmp: Path, tmp_path: Path
) -> None:
    hung = make_adapter_repo(hub, "poison/hangs", module_tmp, seed=6)
    fine = make_adapter_repo(hub, "alice/next-in-line", module_tmp, seed=7)
    hub.gate("GET", r"^/api/models/poison/hangs/revision/", parties=1000, timeout=120)
    svc = Service(hub, tmp_path / "state", "--job-timeout", "4", "--config", str(config_file))
    try:
        _, first = svc.post(push_payload("poison/hangs", hung))
        _, second = svc.post(push_payload("alice/next-in-line", fine))
        stuck, done = svc.wait_final([first["job_id"], second["job_id"]], timeout=60)
        assert stuck["status"] == "failed" and stuck["attempts"] == 1
        assert stuck["detail"] == "stopped after the wall-clock limit of 4 s (--job-timeout)"
        assert 4 <= stuck["finished_at"] - stuck["started_at"] < 15
        assert done["status"] == "done" and done["started_at"] >= stuck["finished_at"]
        (timeout,) = svc.events("job.timeout")
        assert timeout["job"] == first["job_id"] and timeout["limit"] == 4
    finally:
        svc.stop()
    out = subprocess.run(
        [sys.executable, "-m", "gradience_hub", "serve", "--job-timeout", "0"],
        env=hub.subprocess_env(token=BOT_TOKEN, WEBHOOK_SECRET=SECRET, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode == 2 and "--job-timeout must be a number of seconds > 0" in out.stderr


# --------------------------------------------------------------------------- 4. ordering


def test_the_newest_push_wins_whatever_order_the_events_arrive_in(
    hub: HubServer,
    module_tmp: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gradience_hub.serve import worker

    repo = "order/adapter"
    p0 = make_adapter_repo(hub, repo, module_tmp, seed=8)
    p1 = hub.push(repo, {"notes.txt": "v1"})
    p2 = hub.push(repo, {"notes.txt": "v2"})
    p3 = hub.push(repo, {"notes.txt": "v3"})
    configure_client(monkeypatch, hub, tmp_path / "hf", token=BOT_TOKEN)
    monkeypatch.chdir(tmp_path)
    config = ServeConfig.from_dict({"repos": [{"match": "order/*"}]})
    options = ServeOptions(state_dir=tmp_path / "state")
    queue = JobQueue(tmp_path / "state")
    stream = io.StringIO()
    log = EventLog(stream)

    def drain() -> list[Job]:
        ran = []
        while (job := queue.claim()) is not None:
            worker.record(queue, job, worker.attempt(job, config.rule_for(repo), options, log), log)
            final = queue.get(job.id)
            assert final is not None
            ran.append(final)
        return ran

    # delivered newest, oldest, middle: the oldest arrives last among the queued ones
    for sha, old in ((p3, p2), (p1, p0), (p2, p1)):
        queue.enqueue(repo, sha, MAIN, old_sha=old)
    (ran,) = drain()
    assert ran.status == "done" and ran.audited_sha == p3, ran
    (pr,) = hub.prs(repo)
    assert hub.commits(repo, pr.ref)[1].oid == p3  # the PR branches from the newest push
    audit = json.loads(hub.read(repo, "gradience/audit.json", pr.ref))
    assert audit["source"]["sha"] == p3
    # three retrains; the newest is delivered first and published, then an older one arrives
    # (its successor's event is still on its way, so no oldSha names it): it publishes nothing
    p4, p5, p6 = (
        hub.push(repo, adapter_files(llama_like_adapter(tmp_path / f"v{k}", 2, 16, 4, seed=k)))
        for k in (4, 5, 6)
    )
    queue.enqueue(repo, p6, MAIN, old_sha=p5)
    (newest,) = drain()
    assert newest.status == "done" and newest.audited_sha == p6
    assert newest.detail.startswith("Hub PR updated")
    published = hub.commits(repo, pr.ref)
    queue.enqueue(repo, p4, MAIN, old_sha=p3)
    (late,) = drain()
    assert late.status == "done" and late.audited_sha == p6, late
    assert late.detail.startswith("up to date: nothing to commit")
    assert hub.commits(repo, pr.ref) == published and hub.prs(repo) == [pr]
    assert json.loads(hub.read(repo, "gradience/audit.json", pr.ref))["source"]["sha"] == p6
    heads = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["sha"], e["head"]) for e in heads if e["event"] == "job.head"] == [
        (ran.sha, p3),
        (p4, p6),
    ]
    queue.close()


# --------------------------------------------------------------------------- 5. deep JSON


def test_deeply_nested_json_is_bad_input_for_the_service_and_for_once(
    hub: HubServer, service: Service, tmp_path: Path
) -> None:
    deep = b"[" * 100_000
    assert len(deep) < 1024 * 1024
    for body in (deep, b'{"a":' * 100_000):
        status, answer = service.post(None, raw=body)
        assert status == 400 and answer == {"error": "malformed JSON: nested too deeply"}
    assert service.get_json("/healthz")["status"] == "ok"
    env = hub.subprocess_env(token=BOT_TOKEN, PYTHONPATH=str(ROOT))
    env["WEBHOOK_PAYLOAD"] = deep.decode()
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "gradience_hub", "serve", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines()[0] == "Error: WEBHOOK_PAYLOAD: malformed JSON: nested too deeply"
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert time.monotonic() - started < 30
