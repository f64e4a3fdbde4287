"""Concurrent runs, as two real processes against the Hub and GitHub stand-ins.

The stand-ins' ``gate()`` holds the first two matching requests until both have arrived, so
both runs read before either writes: the interleaving that used to open two Hub PRs, post two
sticky comments, or make the loser of a ``--direct`` race print the winner's commit. Each race
is run several times.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gradience_hub.github import ACTIONS_BOT_LOGIN, MARKER
from tests.factories import adapter_files, llama_like_adapter

CLI = [sys.executable, "-m", "gradience_hub"]
ROUNDS = 3


def both(commands: list[tuple[list[str], dict[str, str], Path | None]]) -> list[tuple]:
    """Start every command at once; (returncode, stdout, stderr) of each, in order."""
    procs = [
        subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for cmd, env, cwd in commands
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        results.append((proc.returncode, out, err))
    return results


@pytest.fixture
def adapter(tmp_path: Path) -> Path:
    return llama_like_adapter(tmp_path / "adapter", n_layers=1, d=16, r=4)


def test_two_annotate_runs_end_with_one_open_pr(hub_server, adapter: Path) -> None:
    env = hub_server.subprocess_env()
    for round_ in range(ROUNDS):
        repo = f"alice/race-{round_}"
        hub_server.create_repo(repo, {**adapter_files(adapter), "README.md": "# card\n"})
        # both list the open PRs (none) before either opens one
        hub_server.gate("GET", rf"/api/models/{repo}/discussions$")
        results = both([([*CLI, "annotate", repo], env, None)] * 2)
        for code, _, err in results:
            assert code == 0, err
        prs = hub_server.prs(repo)
        assert len(prs) == 2  # the race happened: both opened one ...
        open_prs = [pr for pr in prs if pr.status == "open"]
        assert len(open_prs) == 1  # ... and they converged on the oldest
        (kept,) = open_prs
        assert kept.num == min(pr.num for pr in prs)
        url = f"{hub_server.url}/{repo}/discussions/{kept.num}"
        outputs = [out for _, out, _ in results]
        assert all(f"Hub PR: {url}\n" in out for out in outputs)
        closed = max(pr.num for pr in prs)
        notes = [out for out in outputs if f"closed our duplicate #{closed}" in out]
        assert len(notes) == 1 and "up to date (nothing to commit)" in notes[0]
        files = hub_server.files(repo, f"refs/pr/{kept.num}")
        assert "gradience/audit.json" in files


def test_the_loser_of_a_direct_race_does_not_claim_the_winners_commit(
    hub_server, adapter: Path
) -> None:
    env = hub_server.subprocess_env()
    for round_ in range(ROUNDS):
        repo = f"alice/direct-{round_}"
        hub_server.create_repo(repo, {**adapter_files(adapter), "README.md": "# card\n"})
        start = hub_server.head_sha(repo)
        # both read README.md at the same head before either commits
        hub_server.gate("HEAD", rf"^/{repo}/resolve/[0-9a-f]{{40}}/README\.md$")
        results = both([([*CLI, "annotate", repo, "--direct"], env, None)] * 2)
        for code, _, err in results:
            assert code == 0, err
        commits = hub_server.commits(repo)
        assert commits[1].oid == start  # exactly one new commit on main
        head = commits[0].oid
        claims = [out for _, out, _ in results if "Committed:" in out]
        assert len(claims) == 1
        assert f"Committed: {hub_server.url}/{repo}/commit/{head}\n" in claims[0]
        (quiet,) = [out for _, out, _ in results if "Committed:" not in out]
        assert f"{repo}: up to date (nothing to commit)" in quiet and head not in quiet


def test_a_lost_commit_answer_is_not_reported_as_up_to_date(hub_server, adapter: Path) -> None:
    repo = "alice/lost"
    hub_server.create_repo(repo, {**adapter_files(adapter), "README.md": "# card\n"})
    # the commit is carried out, then the connection drops before the answer's body
    hub_server.inject("POST", rf"/api/models/{repo}/commit/", partial=0)
    proc = subprocess.run(
        [*CLI, "annotate", repo],
        env=hub_server.subprocess_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    (pr,) = hub_server.prs(repo)
    assert f"Hub PR: {hub_server.url}/{repo}/discussions/{pr.num}\n" in proc.stdout
    assert "up to date" not in proc.stdout
    assert "Note: the Hub lost its answer to our commit; the files are in place" in proc.stdout


def test_two_action_runs_end_with_one_sticky_comment(github_server, tmp_path: Path) -> None:
    token = "ghs_installation0123456789SECRET"
    github_server.add_user(ACTIONS_BOT_LOGIN, token, installation=True)
    workspace = tmp_path / "workspace"
    llama_like_adapter(workspace / "adapters" / "bot", n_layers=1, d=16, r=4)
    commands = []
    for n in range(2):
        event = tmp_path / f"event-{n}.json"
        event.write_text(json.dumps({"number": 7, "pull_request": {"number": 7}}))
        (tmp_path / f"out-{n}").touch()
        (tmp_path / f"summary-{n}").touch()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("INPUT_", "GITHUB_"))}
        env.update(
            GITHUB_ACTIONS="true",
            GITHUB_EVENT_NAME="pull_request",
            GITHUB_EVENT_PATH=str(event),
            GITHUB_REPOSITORY="octo-org/adapters",
            GITHUB_API_URL=github_server.api_url,
            GITHUB_OUTPUT=str(tmp_path / f"out-{n}"),
            GITHUB_STEP_SUMMARY=str(tmp_path / f"summary-{n}"),
            GITHUB_WORKSPACE=str(workspace),
        )
        env["INPUT_REPO-ID"] = "adapters/bot"
        env["INPUT_GITHUB-TOKEN"] = token
        commands.append(([*CLI, "action"], env, workspace))
    for round_ in range(ROUNDS):
        number = 7 + round_
        github_server.add_pr("octo-org/adapters", number)
        for n in range(2):
            Path(commands[n][1]["GITHUB_EVENT_PATH"]).write_text(
                json.dumps({"number": number, "pull_request": {"number": number}})
            )
        # both read the PR's comments (none of ours) before either posts
        github_server.gate("GET", rf"/issues/{number}/comments$")
        results = both(commands)
        for code, out, err in results:
            assert code == 0, out + err
        posts = github_server.requests_matching("POST", rf"/issues/{number}/comments$")
        assert len(posts) == 2  # the race happened ...
        comments = github_server.comments("octo-org/adapters", number)
        assert len(comments) == 1 and comments[0]["body"].count(MARKER) == 1  # ... and converged
        urls = {re.search(r"PR comment \w+: (\S+)", out)[1] for _, out, _ in results}
        assert urls == {comments[0]["html_url"]}
