"""The Space's image (space/Dockerfile, built from this checkout's wheel) run as a Docker Space
runs it: as uid 1000, its own CMD, the secrets in the environment, the host network where the
tests' Hub stand-in listens. Health, the webhook's secret check, a queued job that ends in one
Hub PR, and the state directory kept across a restart of the container."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hubserver import HubServer
from tests.image.conftest import docker
from tests.test_action import HF_TOKEN, HUB_REPO, adapter_files
from tests.test_serve import http, push_payload, wait_for

SECRET = "space-webhook-secret-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Space:
    def __init__(self, image: str, hub: HubServer) -> None:
        self.name = f"gradience-space-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            "WEBHOOK_SECRET": SECRET,
            "HF_TOKEN": HF_TOKEN,
            "HF_ENDPOINT": hub.url,
            "PORT": str(self.port),
        }
        cmd = ["run", "-d", "--name", self.name, "--network", "host"]
        for name in env:
            cmd += ["-e", name]
        docker(*cmd, image, env={**os.environ, **env})
        self.wait_healthy()

    def wait_healthy(self) -> dict:
        def healthy() -> dict | None:
            try:
                status, _, body = http("GET", self.url + "/healthz")
            except OSError:
                return None
            return json.loads(body) if status == 200 else None

        return wait_for(healthy, 60, f"{self.name} /healthz", every=0.3)

    def post(self, payload: dict, secret: str) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json", "X-Webhook-Secret": secret}
        status, _, body = http("POST", self.url + "/webhook", json.dumps(payload).encode(), headers)
        return status, json.loads(body)

    def logs(self) -> str:
        proc = docker("logs", self.name, check=False)
        return proc.stdout + proc.stderr


@pytest.fixture
def space(space_image: str, hub_server: HubServer, tmp_path: Path) -> Iterator[Space]:
    hub_server.create_repo(HUB_REPO, adapter_files(tmp_path))
    running = Space(space_image, hub_server)
    yield running
    docker("rm", "-f", running.name, check=False)


def test_the_space_serves_as_uid_1000_and_keeps_its_state_across_a_restart(
    space: Space, hub_server: HubServer
) -> None:
    assert docker("exec", space.name, "id", "-u").stdout.strip() == "1000"
    payload = push_payload(HUB_REPO, hub_server.head_sha(HUB_REPO))

    status, body = space.post(payload, "wrong-secret")
    assert status == 403, body
    status, body = space.post(payload, SECRET)
    assert status == 202 and body["status"] == "queued", body

    # The job runs in the container against the Hub stand-in: one PR with the card section.
    prs = wait_for(lambda: hub_server.prs(HUB_REPO), 120, "the Hub PR", every=0.5)
    assert len(prs) == 1, space.logs()
    files = hub_server.files(HUB_REPO, f"refs/pr/{prs[0].num}")
    assert "<!-- gradience:start -->" in files["README.md"].decode()

    docker("restart", space.name, timeout=120)
    space.wait_healthy()
    # The queue's database outlived the process: the same push is recognised, not redone.
    status, body = space.post(payload, SECRET)
    assert status == 200 and body["status"] == "ignored", body
    assert "duplicate" in body["reason"], body
    time.sleep(1)
    assert len(hub_server.prs(HUB_REPO)) == 1
    assert HF_TOKEN not in space.logs()
