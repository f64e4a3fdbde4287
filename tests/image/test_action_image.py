"""The Action's image (the unchanged Dockerfile, core variant) run as GitHub's runner runs a
Docker action: inputs as ``INPUT_<NAME>`` with action.yml's defaults for the rest, the workspace,
file commands, home and event mounted under ``/github``, the workspace as working directory,
and the host network, where the tests' Hub and GitHub stand-ins listen on 127.0.0.1."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from gradience_hub.action import OUTPUTS
from gradience_hub.github import ACTIONS_BOT_LOGIN, MARKER
from tests.factories import llama_like_adapter
from tests.githubserver import GitHubServer
from tests.hubserver import HubServer
from tests.image.conftest import TOKEN_RE, docker
from tests.test_action import (
    BOT_TOKEN,
    GH_REPO,
    HF_TOKEN,
    HUB_REPO,
    PR,
    Run,
    adapter_files,
    fail_record,
    parse_outputs,
)

ROOT = Path(__file__).resolve().parents[2]


def action_defaults() -> dict[str, str]:
    """action.yml's input defaults, with ``${{ github.token }}`` as the runner resolves it."""
    inputs = yaml.safe_load((ROOT / "action.yml").read_text(encoding="utf-8"))["inputs"]
    out = {}
    for name, spec in inputs.items():
        value = str(spec.get("default", ""))
        out[name] = BOT_TOKEN if value == "${{ github.token }}" else value
    return out


class Runner:
    """One job's ``/github`` folders and the ``docker run`` of the Action's image in it."""

    def __init__(self, tmp: Path, image: str, hub: HubServer, github: GitHubServer) -> None:
        self.image, self.hub, self.github = image, hub, github
        self.dirs = {
            name: tmp / name for name in ("workspace", "file_commands", "home", "workflow")
        }
        for path in self.dirs.values():
            path.mkdir()
        self.workspace = self.dirs["workspace"]
        self.runs = 0

    def run(self, inputs: dict[str, str], *, event: dict[str, Any] | None = None) -> Run:
        self.runs += 1
        n = self.runs
        files = self.dirs["file_commands"]
        (files / f"set_output_{n}").touch()
        (files / f"step_summary_{n}").touch()
        event = event or {"action": "synchronize", "number": PR, "pull_request": {"number": PR}}
        (self.dirs["workflow"] / "event.json").write_text(json.dumps(event))
        env = {
            "GITHUB_ACTIONS": "true",
            "GITHUB_EVENT_NAME": "pull_request",
            "GITHUB_EVENT_PATH": "/github/workflow/event.json",
            "GITHUB_REPOSITORY": GH_REPO,
            "GITHUB_API_URL": self.github.api_url,
            "GITHUB_OUTPUT": f"/github/file_commands/set_output_{n}",
            "GITHUB_STEP_SUMMARY": f"/github/file_commands/step_summary_{n}",
            "GITHUB_WORKSPACE": "/github/workspace",
            "HOME": "/github/home",
            "RUNNER_TEMP": "/github/home/tmp",
            # A workflow's `env:` for a Hub other than huggingface.co.
            "HF_ENDPOINT": self.hub.url,
        }
        for name, value in {**action_defaults(), **inputs}.items():
            env[f"INPUT_{name.upper()}"] = value
        # Like the runner: `-e NAME` for each variable, the values in the client's environment,
        # so no value (the tokens) is on a command line.
        cmd = ["run", "--rm", "--network", "host", "--workdir", "/github/workspace"]
        for name, path in self.dirs.items():
            cmd += ["-v", f"{path}:/github/{name}"]
        for name in env:
            cmd += ["-e", name]
        proc = docker(*cmd, self.image, check=False, timeout=300, env={**os.environ, **env})
        text = (files / f"set_output_{n}").read_text(encoding="utf-8")
        summary = (files / f"step_summary_{n}").read_text(encoding="utf-8")
        return Run(proc.returncode, proc.stdout, proc.stderr, parse_outputs(text), text, summary)


@pytest.fixture
def runner(
    tmp_path: Path, action_image: str, hub_server: HubServer, github_server: GitHubServer
) -> Runner:
    github_server.add_user(ACTIONS_BOT_LOGIN, BOT_TOKEN, installation=True)
    github_server.add_pr(GH_REPO, PR)
    hub_server.create_repo(HUB_REPO, adapter_files(tmp_path), private=True)
    return Runner(tmp_path, action_image, hub_server, github_server)


def test_audit_of_a_local_adapter_writes_every_output_and_the_summary(runner: Runner) -> None:
    llama_like_adapter(runner.workspace / "adapters" / "local", n_layers=2, d=32, r=4)
    run = runner.run({"repo-id": "adapters/local", "comment": "false"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert set(run.outputs) == set(OUTPUTS)
    report = runner.workspace / "gradience-report" / "adapters--local" / "audit.json"
    audit = json.loads(report.read_text())
    assert run.outputs["status"] == "AUDIT"
    assert run.outputs["utilization"] == f"{audit['summary']['utilization_mean']:.4f}"
    assert run.outputs["report-path"] == "gradience-report"
    assert "## Gradience" in run.summary and "adapters/local" in run.summary
    # The evidence is where this run wrote it, not at the Hub path annotate would use.
    assert "gradience-report/adapters--local/audit.json" in run.summary
    assert runner.github.requests == []


def test_annotate_opens_one_hub_pr_and_one_sticky_comment(runner: Runner) -> None:
    run = runner.run({"repo-id": HUB_REPO, "hf-token": HF_TOKEN, "mode": "annotate"})
    assert run.returncode == 0, run.stdout + run.stderr
    run.assert_no_secret(HF_TOKEN, BOT_TOKEN)
    assert f"::add-mask::{HF_TOKEN}" in run.stdout.splitlines()
    [pr] = runner.hub.prs(HUB_REPO)
    files = runner.hub.files(HUB_REPO, f"refs/pr/{pr.num}")
    assert "<!-- gradience:start -->" in files["README.md"].decode()
    assert {"gradience/audit.json", "gradience/utilization.png"} <= set(files)
    assert run.outputs["hub-pr-url"].endswith(f"/{HUB_REPO}/discussions/{pr.num}")
    [comment] = runner.github.comments(GH_REPO, PR)
    assert comment["body"].startswith(MARKER) and run.outputs["hub-pr-url"] in comment["body"]
    assert comment["user"]["login"] == ACTIONS_BOT_LOGIN


def test_a_failing_record_exits_1_and_a_bad_input_exits_2(runner: Runner) -> None:
    (runner.workspace / "bench.json").write_text(json.dumps(fail_record()))
    inputs = {"repo-id": HUB_REPO, "hf-token": HF_TOKEN, "bench-json": "bench.json"}
    run = runner.run({**inputs, "fail-on": "fail", "comment": "false"})
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.outputs["status"] == "FAIL"
    run.assert_no_secret(HF_TOKEN, BOT_TOKEN)
    bad = runner.run({"repo-id": HUB_REPO, "mode": "bogus", "comment": "false"})
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert "::error title=gradience-hub%3A invalid input 'mode'::" in bad.stdout
    assert bad.outputs["status"] == "ERROR" and "Traceback" not in bad.stderr


def test_the_image_has_no_torch_no_compiler_and_no_secrets(action_image: str) -> None:
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"
    assert (
        docker(
            "run", "--rm", "--entrypoint", "python", action_image, "-c", probe, check=False
        ).returncode
        == 0
    )
    compilers = docker(
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        action_image,
        "-c",
        "command -v gcc || command -v cc || command -v g++ || command -v clang",
        check=False,
    )
    assert compilers.returncode != 0, compilers.stdout
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", action_image).stdout
    assert not TOKEN_RE.search(history), TOKEN_RE.search(history)
    config = json.loads(docker("image", "inspect", action_image).stdout)[0]["Config"]
    names = [item.split("=", 1)[0] for item in config.get("Env") or []]
    assert not [n for n in names if "TOKEN" in n or "SECRET" in n or "PASSWORD" in n], names
    found = docker(
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        action_image,
        "-c",
        "find / -xdev \\( -name .git -o -name .git-credentials -o -name .netrc -o -name .pypirc "
        "-o -path '*/huggingface/token' -o -name stored_tokens \\) -print 2>/dev/null",
        check=False,
    )
    assert found.stdout.strip() == "", found.stdout
    # The entrypoint is the CLI's action command, and the CLI answers.
    version = docker("run", "--rm", "--entrypoint", "gradience-hub", action_image, "--version")
    assert version.stdout.startswith("gradience-hub"), version.stdout
