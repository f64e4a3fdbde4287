"""The Jobs API of the Hub stand-in, driven by the real huggingface_hub client: what run_job
sends, the stages, the SSE logs as fetch_job_logs reads them, list filters, cancel, and that
secrets reach the process but never come back in a JobInfo."""

from __future__ import annotations

import sys
import time

import pytest

from tests.hubserver import HubServer
from tests.hubserver_jobs import jobs_of

PY = sys.executable


@pytest.fixture
def api(hub_client_env: HubServer):  # type: ignore[no-untyped-def]
    from huggingface_hub import HfApi

    yield HfApi()
    jobs_of(hub_client_env).shutdown()


def test_run_job_runs_the_command_with_env_and_secrets(api, hub_client_env: HubServer) -> None:
    script = "import os; print('env', os.environ['MODE']); print('secret', len(os.environ['TOK']))"
    job = api.run_job(
        image="ghcr.io/gradience/audit-action:1.0",
        command=[PY, "-c", script],
        env={"MODE": "bench"},
        secrets={"TOK": "hf_secret_value_123"},
        flavor="a10g-small",
        labels={"run": "r1"},
        namespace="alice",
    )
    assert job.status.stage in ("SCHEDULING", "RUNNING")
    assert job.url == f"{hub_client_env.url}/jobs/alice/{job.id}"
    done = api.wait_for_job(job.id, namespace="alice", poll_interval=0.1, timeout=60)
    assert done.status.stage == "COMPLETED"
    assert done.docker_image == "ghcr.io/gradience/audit-action:1.0"
    assert done.flavor == "a10g-small" and done.labels["run"] == "r1"
    assert done.secrets == {"TOK": None} and done.environment == {"MODE": "bench"}
    logs = list(api.fetch_job_logs(job_id=job.id, namespace="alice"))
    assert logs == ["env bench", f"secret {len('hf_secret_value_123')}"]
    # The spec went over the wire as huggingface_hub builds it.
    [post] = hub_client_env.requests_to(r"^/api/jobs/alice$", "POST")
    body = post.json()
    assert body["secrets"] == {"TOK": "hf_secret_value_123"}
    assert body["dockerImage"] == "ghcr.io/gradience/audit-action:1.0"
    for get in hub_client_env.requests_to(r"^/api/jobs/", "GET"):
        assert b"hf_secret_value_123" not in get.body


def test_follow_streams_until_the_job_ends(api) -> None:
    script = "import time\nfor i in range(3):\n    print(i, flush=True); time.sleep(0.3)"
    job = api.run_job(image="python:3.11", command=[PY, "-c", script], namespace="alice")
    assert list(api.fetch_job_logs(job_id=job.id, namespace="alice", follow=True)) == [
        "0",
        "1",
        "2",
    ]
    assert api.inspect_job(job_id=job.id, namespace="alice").status.stage == "COMPLETED"


def test_non_zero_exit_is_error_and_timeout_too(api) -> None:
    bad = api.run_job(image="x", command=[PY, "-c", "raise SystemExit(4)"], namespace="alice")
    slow = api.run_job(
        image="x", command=[PY, "-c", "import time; time.sleep(30)"], timeout=1, namespace="alice"
    )
    bad, slow = api.wait_for_job([bad.id, slow.id], namespace="alice", poll_interval=0.1)
    assert bad.status.stage == "ERROR" and "exit code: 4" in bad.status.message
    assert slow.status.stage == "ERROR" and "timeout" in slow.status.message.lower()


def test_cancel_kills_the_process_and_list_filters(api, hub_client_env: HubServer) -> None:
    sleeper = api.run_job(
        image="x",
        command=[PY, "-c", "import time; print('up', flush=True); time.sleep(60)"],
        labels={"run": "a"},
        namespace="alice",
    )
    other = api.run_job(
        image="x", command=[PY, "-c", "pass"], labels={"run": "b"}, namespace="alice"
    )
    deadline = time.monotonic() + 30
    while api.inspect_job(job_id=sleeper.id, namespace="alice").status.stage != "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    api.cancel_job(job_id=sleeper.id, namespace="alice")
    done = api.wait_for_job(sleeper.id, namespace="alice", poll_interval=0.1, timeout=30)
    assert done.status.stage == "CANCELED"
    api.wait_for_job(other.id, namespace="alice", poll_interval=0.1, timeout=30)
    assert [j.id for j in api.list_jobs(labels={"run": "a"}, namespace="alice")] == [sleeper.id]
    assert [j.id for j in api.list_jobs(status="COMPLETED", namespace="alice")] == [other.id]
    assert {j.id for j in api.list_jobs(namespace="alice")} == {sleeper.id, other.id}


def test_cancel_while_scheduling_never_starts_it(api, hub_client_env: HubServer) -> None:
    state = jobs_of(hub_client_env)
    state.hold()
    job = api.run_job(image="x", command=[PY, "-c", "print('ran')"], namespace="alice")
    api.cancel_job(job_id=job.id, namespace="alice")
    state.release()
    state.wait_all()
    assert api.inspect_job(job_id=job.id, namespace="alice").status.stage == "CANCELED"
    assert state.jobs[job.id].process is None


def test_namespace_and_token_are_checked(hub_client_env: HubServer) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    with pytest.raises(HfHubHTTPError) as info:
        HfApi().run_job(image="x", command=["true"], namespace="bob")
    assert info.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as info:
        HfApi(token="hf_bob_read_token").run_job(image="x", command=["true"], namespace="bob")
    assert info.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as info:
        HfApi().inspect_job(job_id="nope", namespace="alice")
    assert info.value.response.status_code == 404
