"""`gradience-hub annotate` against the Hub-compatible test server (tests/hubserver.py, started on
127.0.0.1 and driven by the real huggingface_hub client): PRs, direct commits, 412 retries,
card splicing, dry runs, errors, sticky comments, local directories."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gradience_hub import hub
from gradience_hub.errors import CardError, HubError
from gradience_hub.markers import SECTION_END as END
from gradience_hub.markers import SECTION_START as START
from gradience_hub.publish import annotate as ann
from tests.factories import (
    adapter_files,
    llama_like_adapter,
    lora_config,
    planted_factors,
    write_adapter,
)

GOLDEN = Path(__file__).parent / "golden"
HOSTILE_CARD = (
    "---\n"
    "# a YAML comment the card keeps\n"
    "license: apache-2.0\n"
    "tags:\n"
    "  - lora   # inline comment\n"
    "library_name: peft\n"
    "base_model: test/tiny-base\n"
    "---\n"
    "\n"
    "# My adapter  \n"
    "\t\tindented text with trailing spaces   \n"
    "\n"
    "<!-- other-tool:start -->\nsomebody else's section\n<!-- other-tool:end -->\n"
    "\n\n\nlast line without newline"
)


@pytest.fixture
def repo(hub_client_env, tmp_path: Path):
    """org/adapter on the test Hub, owned by alice (whose token the client uses)."""
    directory = llama_like_adapter(tmp_path / "adapter", n_layers=2, d=32, r=8)
    hub_client_env.create_repo(
        "alice/adapter", {**adapter_files(directory), "README.md": HOSTILE_CARD}, owner="alice"
    )
    return hub_client_env


def _changed_adapter(tmp_path: Path) -> dict[str, bytes]:
    spectrum = np.array([1.0, 1.0] + [0.0] * 6)
    modules = {
        f"model.layers.{i}.self_attn.q_proj": planted_factors(32, 32, 8, spectrum, seed=i)
        for i in range(2)
    }
    return adapter_files(write_adapter(tmp_path / "changed", modules, lora_config(r=8)))


def _without_model_index(card: str) -> str:
    """The card without the model-index block a bench adds at the end of its front matter."""
    head, found, rest = card.partition("model-index:\n")
    if not found:
        return card
    block, _, body = rest.partition("---\n")
    assert all(line.startswith((" ", "-")) for line in block.splitlines())
    return head + "---\n" + body


def _outside(text: str) -> tuple[str, str]:
    return text[: text.index(START)], text[text.index(END) + len(END) :]


def test_first_run_opens_one_pr_then_reruns_are_quiet(repo, tmp_path: Path) -> None:
    result = ann.annotate("alice/adapter")
    assert result.changed and result.status == "AUDIT"
    prs = repo.prs("alice/adapter")
    assert len(prs) == 1 and prs[0].title.startswith("Gradience audit")
    assert result.pr_url and result.pr_url.endswith(f"/discussions/{prs[0].num}")
    ref = f"refs/pr/{prs[0].num}"
    files = repo.files("alice/adapter", ref)
    assert {"README.md", "gradience/audit.json", "gradience/utilization.png"} <= set(files)
    assert "gradience/bench.json" not in files
    audit = json.loads(files["gradience/audit.json"])
    assert audit["source"]["sha"] == repo.head_sha("alice/adapter")
    assert audit == result.audit.to_dict()
    assert files["gradience/utilization.png"].startswith(b"\x89PNG")
    readme = files["README.md"].decode()
    assert readme.count(START) == 1 and readme.count(END) == 1
    main_readme = repo.read("alice/adapter", "README.md").decode()
    assert main_readme == HOSTILE_CARD  # main untouched: the change waits in the PR
    # one commit in the PR, parented on the audited sha
    assert len(repo.commits("alice/adapter", ref)) == len(repo.commits("alice/adapter")) + 1

    mutations = len(repo.mutations())
    again = ann.annotate("alice/adapter")
    assert not again.changed
    assert len(repo.mutations()) == mutations  # no commit, no PR
    assert len(repo.prs("alice/adapter")) == 1

    repo.push("alice/adapter", _changed_adapter(tmp_path), message="retrain")
    third = ann.annotate("alice/adapter")
    assert third.changed and third.pr_url == result.pr_url
    assert len(repo.prs("alice/adapter")) == 1
    updated = json.loads(repo.read("alice/adapter", "gradience/audit.json", ref))
    assert all(row["energy_rank"] == 2 for row in updated["layers"])


def test_card_bytes_outside_the_markers_are_kept(repo) -> None:
    ann.annotate("alice/adapter", create_pr=False)
    readme = repo.read("alice/adapter", "README.md").decode()
    before, after = _outside(readme)
    # the section is appended at the end of the body; everything before it is the old card
    assert before.startswith(HOSTILE_CARD)
    assert after in ("", "\n")
    # a second, changed run replaces only what is between the markers
    repo.push("alice/adapter", {"README.md": readme.replace("# My adapter", "# Renamed")})
    ann.annotate("alice/adapter", create_pr=False, bench_json=str(GOLDEN / "bench_pass.json"))
    again = repo.read("alice/adapter", "README.md").decode()
    b2, a2 = _outside(again)
    # the bench adds the card's model-index (appended to the front matter), nothing else
    assert _without_model_index(b2) == before.replace("# My adapter", "# Renamed") and a2 == after
    assert "PASS" in again[again.index(START) : again.index(END)]


def test_direct_commit_and_nothing_changed(repo) -> None:
    head = repo.head_sha("alice/adapter")
    result = ann.annotate("alice/adapter", create_pr=False)
    assert result.changed and result.commit_url and not repo.prs("alice/adapter")
    commits = repo.commits("alice/adapter")
    assert commits[1].oid == head  # exactly one new commit on main
    assert set(repo.files("alice/adapter")) >= {"gradience/audit.json", "README.md"}
    assert not ann.annotate("alice/adapter", create_pr=False).changed
    assert len(repo.commits("alice/adapter")) == len(commits)


def test_concurrent_commit_gives_412_and_the_retry_keeps_both(repo, monkeypatch) -> None:
    real_commit = hub.commit_files
    calls = []

    def racing_commit(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not calls:  # somebody edits the card between our read and our push
            repo.push("alice/adapter", {"README.md": HOSTILE_CARD.replace("My adapter", "Theirs")})
        calls.append(kwargs["parent_sha"])
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(hub, "commit_files", racing_commit)
    result = ann.annotate("alice/adapter", create_pr=False)
    assert len(calls) == 2 and calls[0] != calls[1]
    assert any(r.status == 412 for r in repo.requests_to(r"/commit/", "POST"))
    readme = repo.read("alice/adapter", "README.md").decode()
    assert "# Theirs" in readme and START in readme  # both changes
    assert result.changed


def test_repo_without_readme_gets_front_matter(hub_client_env, tmp_path: Path) -> None:
    directory = llama_like_adapter(tmp_path / "a", n_layers=1, d=16, r=4)
    hub_client_env.create_repo("alice/bare", adapter_files(directory), owner="alice")
    ann.annotate("alice/bare", create_pr=False)
    readme = hub_client_env.read("alice/bare", "README.md").decode()
    assert readme.startswith("---\n")
    front = readme.split("---\n")[1]
    assert "library_name: peft" in front and "base_model: test/tiny-base" in front
    assert "gradience" in front and START in readme


def test_broken_markers_exit_2_without_writing(repo) -> None:
    repo.push("alice/adapter", {"README.md": f"# card\n{START}\nno end marker\n"})
    repo.clear_requests()
    with pytest.raises(CardError) as err:
        ann.annotate("alice/adapter")
    assert err.value.exit_code == 2
    assert repo.write_requests() == []


def test_dry_run_sends_no_write_request(repo, capsys) -> None:
    from gradience_hub.cli import main

    repo.clear_requests()
    with pytest.raises(SystemExit) as code:
        main(["annotate", "alice/adapter", "--dry-run"])
    out = capsys.readouterr().out
    assert code.value.code == 0
    assert repo.write_requests() == []
    assert "+" + START in out and "gradience/audit.json" in out and "Dry run" in out


def test_transient_failures_are_retried_then_exit_3(repo) -> None:
    repo.inject("POST", r"/api/models/alice/adapter/commit/", status=500, times=1)
    result = ann.annotate("alice/adapter", create_pr=False, retry_backoff=0.01)
    assert result.changed
    repo.push("alice/adapter", {"README.md": "# reset\n"})
    repo.inject("POST", r"/api/models/alice/adapter/commit/", status=429, times=10)
    with pytest.raises(HubError) as err:
        ann.annotate("alice/adapter", create_pr=False, retry_backoff=0.01)
    assert err.value.exit_code == 3 and "429" in err.value.message
    repo.clear_faults()
    repo.inject("POST", r"/api/models/alice/adapter/commit/", drop=True, times=1)
    assert ann.annotate("alice/adapter", create_pr=False, retry_backoff=0.01).changed


def test_access_errors_exit_3(repo, hub_server, tmp_path: Path) -> None:
    env_bob = hub_server.subprocess_env(token="hf_bob_read_token")
    cmd = [sys.executable, "-m", "gradience_hub", "annotate"]
    denied = subprocess.run(
        [*cmd, "alice/adapter", "--direct"],
        capture_output=True,
        text=True,
        env=env_bob,
        check=False,
    )
    assert denied.returncode == 3, denied.stderr
    assert "403" in denied.stderr and "Traceback" not in denied.stderr
    missing = subprocess.run(
        [*cmd, "alice/nothing"],
        capture_output=True,
        text=True,
        env=hub_server.subprocess_env(),
        check=False,
    )
    assert missing.returncode == 3 and "not found" in missing.stderr
    directory = llama_like_adapter(tmp_path / "p", n_layers=1, d=16, r=4)
    hub_server.create_repo("alice/private", adapter_files(directory), private=True, owner="alice")
    anonymous = subprocess.run(
        [*cmd, "alice/private"],
        capture_output=True,
        text=True,
        env=hub_server.subprocess_env(token=None),
        check=False,
    )
    assert anonymous.returncode == 3 and "Traceback" not in anonymous.stderr


def test_token_never_printed_or_written(repo, hub_server) -> None:
    token = "hf_alice_write_token"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gradience_hub",
            "annotate",
            "alice/adapter",
            "--comment-on-pr",
            "1",
            "--bench-json",
            str(GOLDEN / "bench_fail.json"),
            "--fail-on-fail",
        ],
        capture_output=True,
        text=True,
        env=hub_server.subprocess_env(),
        check=False,
    )
    assert proc.returncode == 1, proc.stderr  # FAIL with --fail-on-fail, after publishing
    assert token not in proc.stdout + proc.stderr
    (pr,) = hub_server.prs("alice/adapter")
    for content in hub_server.files("alice/adapter", f"refs/pr/{pr.num}").values():
        assert token.encode() not in content
    for event in pr.comments():
        assert token not in (event.content or "")


def test_hostile_names_cannot_break_the_section(hub_client_env, tmp_path: Path) -> None:
    """Strings from the adapter (module names, base model), the bench record (variant and task
    names, warnings) and the repo's README cannot close the section, open HTML or @-mention."""
    import re

    hostile = "<!-- gradience:end --><script>alert(1)</script>@everyone|x\n[a](javascript:x)"
    B, A = planted_factors(16, 16, 4)
    directory = write_adapter(
        tmp_path / "evil",
        {f"model.layers.0.{hostile}.q_proj": (B, A)},
        lora_config(r=4, base_model_name_or_path=f"evil/base{hostile}\nlicense: stolen"),
    )
    bench = json.loads((GOLDEN / "bench_fail.json").read_text())
    bench["variants"][0]["name"] = hostile
    bench["task"]["name"] = hostile
    bench["warnings"] = [hostile]
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    card = "# card\n@maintainer wrote this <b>card</b>\n"
    hub_client_env.create_repo(
        "alice/evil", {**adapter_files(directory), "README.md": card}, owner="alice"
    )
    ann.annotate("alice/evil", create_pr=False, bench_json=str(tmp_path / "bench.json"))
    readme = hub_client_env.read("alice/evil", "README.md").decode()
    assert readme.count(START) == 1 and readme.count(END) == 1
    section = readme[readme.index(START) + len(START) : readme.index(END)]
    assert "<script>" not in section and "<!--" not in section
    assert "](javascript:" not in section  # shown as text, never as a link
    assert not re.search(r"(?<![\w`])@[A-Za-z0-9]", section)  # no @-mention
    # the card had no front matter: it gets one with the missing keys, and its body is kept
    front, body = readme[4:].split("---\n", 1)
    assert body.startswith(card) and "library_name: peft" in front
    assert "license" not in front  # no YAML injection through base_model


def test_sticky_hub_comment(repo) -> None:
    num = repo.open_discussion("alice/adapter", "Question", author="bob")
    repo.add_comment(
        "alice/adapter", num, "<!-- gradience-hub:comment --> bob's copy", author="bob"
    )
    first = ann.annotate("alice/adapter", comment_on_pr=num)
    assert first.hub_comment_url
    ann.annotate("alice/adapter", comment_on_pr=num, bench_json=str(GOLDEN / "bench_pass.json"))
    comments = repo.discussion("alice/adapter", num).comments()
    ours = [c for c in comments if c.author == "alice" and ann.COMMENT_MARKER in (c.content or "")]
    assert len(ours) == 1 and "PASS" in ours[0].content
    # its evidence links point at a revision that holds the files
    import re
    from urllib.parse import unquote

    links = re.findall(r"/alice/adapter/blob/([^/]+)/(gradience/[\w.]+)\)", ours[0].content)
    assert links
    for rev, path in links:
        assert repo.read("alice/adapter", path, unquote(rev)) is not None
    assert any(c.author == "bob" and c.content.endswith("bob's copy") for c in comments)


def test_local_directory_is_written_in_place(tmp_path: Path, capsys) -> None:
    from gradience_hub.cli import main

    clone = llama_like_adapter(tmp_path / "clone", n_layers=1, d=16, r=4)
    (clone / "README.md").write_text(HOSTILE_CARD)
    with pytest.raises(SystemExit) as code:
        main(["annotate", str(clone), "--bench-json", str(GOLDEN / "bench_pass.json")])
    assert code.value.code == 0
    assert (clone / "gradience" / "bench.json").is_file()
    assert (clone / "gradience" / "bench.md").is_file()
    readme = (clone / "README.md").read_text()
    assert _without_model_index(readme).startswith(HOSTILE_CARD)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["annotate", str(clone), "--bench-json", str(GOLDEN / "bench_pass.json")])
    assert "up to date" in capsys.readouterr().out
    # broken markers: exit 2 and the card is not touched
    (clone / "README.md").write_text(f"{START}\n{START}\n{END}\n")
    before = {p: p.read_bytes() for p in clone.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit) as code:
        main(["annotate", str(clone)])
    assert code.value.code == 2
    assert before == {p: p.read_bytes() for p in clone.rglob("*") if p.is_file()}
    shutil.rmtree(clone)


def test_dry_run_needs_no_token(repo, monkeypatch) -> None:
    """Anonymous dry run of a public repo: the diff and the files, no write request."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(Path(repo.hf_home) / "no-token"))
    repo.clear_requests()
    result = ann.annotate("alice/adapter", dry_run=True)
    assert result.dry_run and "+" + START in result.diff and repo.write_requests() == []
    assert result.pr_url is None
