"""Publishing on other people's repos: nothing lost, nothing forged, nobody in.

One test per class of finding: README splicing (markers in code, front matter as the Hub reads
it, the PR head), local clones (symlinks out, file modes), ``--output`` targets, ``compress
--force``, what reaches stdout (tokens, control characters, workflow commands), and the inputs
that used to crash (Retry-After, bad options, undecodable or hostile published documents,
templates, the heatmap). Each goes through the CLI or the Hub stand-in and checks the exit code,
the message and that bytes outside the target are unchanged.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gradience_hub import _io, hub
from gradience_hub.audit import AuditReport
from gradience_hub.cli import main
from gradience_hub.errors import CardError, UsageError
from gradience_hub.markers import COMMENT_MARKER, SECTION_END, SECTION_START
from gradience_hub.output import clean, strip_controls
from gradience_hub.publish import annotate as ann
from gradience_hub.publish.readme import splice_readme
from tests.factories import (
    adapter_files,
    llama_like_adapter,
    lora_config,
    planted_factors,
    write_adapter,
)

GOLDEN = Path(__file__).parent / "golden"
CLI = [sys.executable, "-m", "gradience_hub"]
TOKEN = "hf_alice_write_token"


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The CLI entry point in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as code:
        main(args)
    out = capsys.readouterr()
    return int(code.value.code or 0), out.out, out.err


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    return llama_like_adapter(tmp_path / "clone", n_layers=1, d=16, r=4)


@pytest.fixture
def repo(hub_client_env, tmp_path: Path):
    directory = llama_like_adapter(tmp_path / "adapter", n_layers=2, d=32, r=8)
    hub_client_env.create_repo(
        "alice/adapter", {**adapter_files(directory), "README.md": "# card\n"}, owner="alice"
    )
    return hub_client_env


# --------------------------------------------------------------------------- markers in code

DOCUMENTED = (
    "# Using gradience-hub\n\n"
    "Put these lines in your card:\n\n"
    f"```markdown\n{SECTION_START}\nyour section\n{SECTION_END}\n```\n\n"
    f"~~~~\n{SECTION_START}\n~~~~\n\n"
    f"    {SECTION_END}\n    (an indented example)\n\n"
    f"Inline: `{SECTION_START}` and ``{SECTION_END}``.\n"
)


def test_markers_inside_code_are_the_authors_text(
    clone: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (clone / "README.md").write_text(DOCUMENTED)
    code, out, err = run_cli(["annotate", str(clone)], capsys)
    assert code == 0, err
    readme = (clone / "README.md").read_text()
    front, body = readme.split("---\n", 2)[1:]  # we added front matter; the body is the old card
    assert "library_name: peft" in front
    assert body.startswith(DOCUMENTED)  # every byte of the example kept
    live = body[len(DOCUMENTED) :]
    assert live.startswith(f"\n{SECTION_START}\n") and live.endswith(f"{SECTION_END}\n")
    before = snapshot(clone)
    code, out, _ = run_cli(["annotate", str(clone)], capsys)
    assert code == 0 and "up to date" in out and snapshot(clone) == before


def test_a_live_section_after_a_documented_one_is_replaced_in_place() -> None:
    card = f"---\nlicense: mit\n---\n{DOCUMENTED}\n{SECTION_START}\nold\n{SECTION_END}\ntail\n"
    out = splice_readme(card, "new", base_model=None)
    body = card.split("---\n", 2)[2]
    assert out.split("---\n", 2)[2] == body.replace(
        f"{SECTION_START}\nold\n", f"{SECTION_START}\nnew\n"
    )
    assert out.count(f"{SECTION_START}\nnew\n{SECTION_END}\ntail\n") == 1


def test_an_unclosed_fence_is_exit_2_and_nothing_is_written(
    clone: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (clone / "README.md").write_text("# card\n\n```python\nprint('never closed')\n")
    before = snapshot(clone)
    code, _, err = run_cli(["annotate", str(clone)], capsys)
    assert code == 2
    assert "README.md has a code fence that is never closed (body line 3)" in err
    assert snapshot(clone) == before


# --------------------------------------------------------------------------- front matter


@pytest.mark.parametrize(
    ("card", "message"),
    [
        ("---\nlicense: mit\n...\n# body\n", "closed by '...', which the Hub does not read"),
        ("---\nlicense: [mit\n---\n# body\n", "YAML front matter does not parse"),
        ("---\n- a list\n---\n# body\n", "YAML front matter is a list, not a mapping"),
    ],
)
def test_front_matter_the_hub_cannot_read_is_exit_2_locally_and_on_the_hub(
    card: str, message: str, clone: Path, repo, capsys: pytest.CaptureFixture[str]
) -> None:
    (clone / "README.md").write_text(card)
    before = snapshot(clone)
    code, _, err = run_cli(["annotate", str(clone)], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.splitlines()) == 2
    assert snapshot(clone) == before

    repo.push("alice/adapter", {"README.md": card})
    repo.clear_requests()
    code, _, err = run_cli(["annotate", "alice/adapter"], capsys)
    lines = err.splitlines()  # a progress line ("Auditing ..."), then the error in two lines
    assert code == 2 and message in lines[-2] and lines[-1].startswith("Hint: ")
    assert [line for line in lines if line.startswith(("Error", "Hint"))] == lines[-2:]
    assert repo.write_requests() == []


def test_front_matter_after_blank_lines_gets_no_second_block(
    clone: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = "\n\n---\nlicense: mit\ntags:\n- x\n---\n# body\n"
    (clone / "README.md").write_text(card)
    code, _, err = run_cli(["annotate", str(clone)], capsys)
    assert code == 0, err
    readme = (clone / "README.md").read_text()
    assert readme.startswith("\n\n---\nlicense: mit\ntags:\n- x\nlibrary_name: peft\n")
    assert readme.count("---\n") == 2  # one block: opened and closed once
    assert readme.split("---\n", 2)[2].startswith("# body\n")
    import yaml
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    match = REGEX_YAML_BLOCK.search(readme)
    assert match and yaml.safe_load(match.group(2))["license"] == "mit"


# --------------------------------------------------------------------------- the PR head


def test_a_rerun_keeps_a_reviewers_edits_on_the_pr(repo, tmp_path: Path) -> None:
    first = ann.annotate("alice/adapter")
    (pr,) = repo.prs("alice/adapter")
    ref = f"refs/pr/{pr.num}"
    readme = repo.read("alice/adapter", "README.md", ref).decode()
    edited = readme.replace("# card\n", "# card, reviewed\n\nA paragraph the reviewer added.\n")
    edited += "\nA footer after the section.\n"
    repo.push("alice/adapter", {"README.md": edited}, branch=ref, author="alice")
    spectrum = np.array([1.0, 1.0] + [0.0] * 6)
    changed = {
        f"model.layers.{i}.self_attn.q_proj": planted_factors(32, 32, 8, spectrum, seed=i)
        for i in range(2)
    }
    repo.push(
        "alice/adapter",
        adapter_files(write_adapter(tmp_path / "new", changed, lora_config(r=8))),
    )
    second = ann.annotate("alice/adapter")
    assert second.changed and second.pr_url == first.pr_url
    after = repo.read("alice/adapter", "README.md", ref).decode()
    cut = after.index(SECTION_START) + len(SECTION_START), after.index(SECTION_END)
    was = edited.index(SECTION_START) + len(SECTION_START), edited.index(SECTION_END)
    assert after[: cut[0]] == edited[: was[0]]  # the reviewer's bytes, exactly
    assert after[cut[1] :] == edited[was[1] :]
    assert after[cut[0] : cut[1]] != edited[was[0] : was[1]]  # the new evidence


# --------------------------------------------------------------------------- local clones


def test_a_clone_cannot_make_us_write_or_publish_outside_it(
    clone: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (clone / "gradience").symlink_to(elsewhere)
    code, _, err = run_cli(["annotate", str(clone)], capsys)
    assert code == 2 and "resolves to" in err and "outside that directory" in err
    assert list(elsewhere.iterdir()) == []
    assert not (clone / "README.md").exists()  # all or nothing

    (clone / "gradience").unlink()
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the Hub")
    (clone / "README.md").symlink_to(secret)
    code, _, err = run_cli(["annotate", str(clone)], capsys)
    assert code == 2 and "README.md in" in err and "outside that directory" in err
    assert secret.read_text() == "not for the Hub" and not (clone / "gradience").exists()


def test_clone_files_keep_their_mode(clone: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (clone / "README.md").write_text("# card\n")
    os.chmod(clone / "README.md", 0o640)
    umask = os.umask(0o022)
    try:
        code, _, err = run_cli(["annotate", str(clone)], capsys)
    finally:
        os.umask(umask)
    assert code == 0, err
    assert stat.S_IMODE((clone / "README.md").stat().st_mode) == 0o640
    assert stat.S_IMODE((clone / "gradience" / "audit.json").stat().st_mode) == 0o644


def test_non_utf8_readme_is_exit_2_locally_and_on_the_hub(
    clone: Path, repo, capsys: pytest.CaptureFixture[str]
) -> None:
    (clone / "README.md").write_bytes(b"# caf\xe9\n")
    before = snapshot(clone)
    code, _, err = run_cli(["annotate", str(clone)], capsys)
    assert code == 2 and "README.md in" in err and "is not UTF-8 text (byte 5" in err
    assert snapshot(clone) == before
    repo.push("alice/adapter", {"README.md": b"# caf\xe9\n"})
    repo.clear_requests()
    code, _, err = run_cli(["annotate", "alice/adapter"], capsys)
    assert code == 2 and "README.md in alice/adapter is not UTF-8 text" in err
    assert repo.write_requests() == []


@pytest.mark.parametrize(
    "published",
    [
        b"\xff\xfe not utf-8",
        json.dumps({"schema": "gradience-hub/audit/v1", "source": "x", "layers": []}).encode(),
        b"[" * 100_000 + b"]" * 100_000,
        b"{not json",
    ],
    ids=["not-utf8", "source-x", "deeply-nested", "not-json"],
)
def test_unreadable_published_documents_are_replaced(repo, published: bytes) -> None:
    repo.push("alice/adapter", {"gradience/audit.json": published})
    result = ann.annotate("alice/adapter", create_pr=False)
    assert result.changed
    audit = json.loads(repo.read("alice/adapter", "gradience/audit.json"))
    assert audit == result.audit.to_dict() and audit["source"]["repo_id"] == "alice/adapter"


# --------------------------------------------------------------------------- --output FILE


def test_output_writes_through_a_symlink_and_refuses_special_files(
    clone: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "real.json"
    target.write_text("old")
    os.chmod(target, 0o600)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    code, _, err = run_cli(["audit", str(clone), "-o", str(link)], capsys)
    assert code == 0, err
    assert link.is_symlink() and json.loads(target.read_text())["schema"].startswith("gradience")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code, _, err = run_cli(["audit", str(clone), "-o", str(fifo)], capsys)
    assert code == 2 and f"refusing to write {fifo}: it is not a regular file" in err
    assert stat.S_ISFIFO(fifo.stat().st_mode)

    device = Path("/dev/full")
    if device.exists():
        before = device.stat()
        code, _, err = run_cli(["audit", str(clone), "-o", str(device)], capsys)
        assert code == 2 and "refusing to write /dev/full: it is not a regular file" in err
        assert stat.S_ISCHR(device.stat().st_mode) and device.stat().st_ino == before.st_ino

    missing = tmp_path / "no" / "such" / "dir" / "audit.json"
    code, _, err = run_cli(["audit", str(clone), "-o", str(missing)], capsys)
    assert code == 2 and "does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "no").exists()


# --------------------------------------------------------------------------- compress --force


def test_compress_force_replaces_only_a_previous_adapter_output(
    clone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "notes.txt").write_text("mine")
    base = ["compress", str(clone), "--rank", "2", "--force"]
    for output, message in (
        (".", "is the working directory or contains it"),
        (str(tmp_path), "would overwrite the source adapter"),
    ):
        code, _, err = run_cli([*base, "-o", output], capsys)
        assert code == 2 and message in err, err
    project = tmp_path / "project"
    project.mkdir()
    (project / "adapter_config.json").write_text("{}")
    (project / "train.py").write_text("precious")
    code, _, err = run_cli([*base, "-o", str(project)], capsys)
    assert code == 2 and "holds 'train.py': it is not a previous adapter output" in err
    assert (project / "train.py").read_text() == "precious"
    assert (work / "notes.txt").read_text() == "mine" and snapshot(clone)

    previous = tmp_path / "previous"
    code, _, err = run_cli(["compress", str(clone), "--rank", "3", "-o", str(previous)], capsys)
    assert code == 0, err
    code, _, err = run_cli([*base, "-o", str(previous)], capsys)
    assert code == 0, err
    assert json.loads((previous / "adapter_config.json").read_text())["r"] == 2


# --------------------------------------------------------------------------- what is printed


def test_hostile_module_names_reach_stdout_without_controls_or_commands(tmp_path: Path) -> None:
    hostile = "x\x1b]0;owned\x07\x1b[31m::error::forged\u202e"
    B, A = planted_factors(16, 16, 4)
    directory = write_adapter(
        tmp_path / "evil", {f"model.layers.0.{hostile}.q_proj": (B, A)}, lora_config(r=4)
    )
    proc = subprocess.run(
        [*CLI, "audit", str(directory), "--layers"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "forged" in proc.stdout  # the name is shown...
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout and "\u202e" not in proc.stdout
    for line in proc.stdout.splitlines():  # ...but never as a workflow command
        assert not line.lstrip().startswith("::"), line


def test_clean_defuses_every_workflow_command_line() -> None:
    text = "ok\n::add-mask::x\n  ::error::y\r\n\t::warning::z"
    cleaned = clean(text)
    assert [line.lstrip().startswith("::") for line in cleaned.splitlines()] == [False] * 4
    assert cleaned.replace("\u200b", "") == text
    assert strip_controls("a\x1b[1mb\x1b]8;;http://x\x1b\\c\x9b1md\x00e") == "abcde"


def test_a_hub_error_body_that_echoes_the_token_never_reaches_the_output(
    repo, hub_server, tmp_path: Path
) -> None:
    echo = {"error": f"proxy refused: Authorization: Bearer {TOKEN}"}
    for env in (
        hub_server.subprocess_env(),  # HF_TOKEN
        _saved_login_env(hub_server, tmp_path),  # a saved `hf auth login`, no HF_TOKEN
    ):
        hub_server.inject("GET", r"/api/models/alice/adapter", status=502, body=echo, times=50)
        proc = subprocess.run(
            [*CLI, "annotate", "alice/adapter"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=120,
        )
        hub_server.clear_faults()
        assert proc.returncode == 3, proc.stderr
        assert "proxy refused: Authorization: Bearer ***" in proc.stderr
        assert TOKEN not in proc.stdout + proc.stderr


def _saved_login_env(hub_server, tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "saved-login-home"
    home.mkdir()
    (home / "token").write_text(TOKEN)
    env = hub_server.subprocess_env(token=None, hf_home=home)
    env.pop("HF_TOKEN", None)
    return env


# --------------------------------------------------------------------------- crashes


@pytest.mark.parametrize("value", ["nan", "inf", "-5", "soon", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_an_unusable_retry_after_falls_back_to_the_backoff(repo, value: str) -> None:
    repo.inject(
        "POST", r"/api/models/alice/adapter/commit/", status=429, headers={"Retry-After": value}
    )
    result = ann.annotate("alice/adapter", create_pr=False, retry_backoff=0.01)
    assert result.changed
    assert [r.status for r in repo.requests_to(r"/commit/", "POST")] == [429, 200]


def test_retry_after_parsing() -> None:
    assert hub.parse_retry_after("2.5") == 2.5
    assert hub.parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412480.0) == 30.0
    for bad in (None, "nan", "inf", "-1", "", "later"):
        assert hub.parse_retry_after(bad) is None


@pytest.mark.parametrize("number", ["-1", "0"])
def test_a_bad_comment_number_is_exit_2_before_any_write(
    repo, number: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo.clear_requests()
    code, _, err = run_cli(["annotate", "alice/adapter", "--comment-on-pr", number], capsys)
    assert code == 2
    assert f"--comment-on-pr must be a discussion number (1 or more), not {number}" in err
    assert repo.requests == []  # not even a read


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "recursed too deeply"),
        ("{% for i in range(10**9) %}x{% endfor %}", "Range too big"),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "loops more than 1,000,000 times",
        ),
        ("{{ 'x' * 10**9 }}", "builds a string or list too large"),
        ("{% set n = 99999999 %}{{ 9 ** n }}", "power too large"),
    ],
)
def test_runaway_templates_are_template_errors_in_bounded_time(
    tmp_path: Path, template: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "card_section.md.j2").write_text(template)
    audit = str(GOLDEN / "audit.json")
    started = time.monotonic()
    code, out, err = run_cli(["render", "--audit", audit, "--template-dir", str(tmp_path)], capsys)
    assert time.monotonic() - started < 15
    assert code == 2 and message in err and out == ""
    assert len(err.splitlines()) <= 2


def test_the_heatmap_draws_hostile_and_huge_grids_quietly(tmp_path: Path) -> None:
    """Mathtext in a module name, glyphs the font lacks, > 3,200 layer columns: a PNG, exit 0,
    and nothing on stderr."""
    modules = {
        f"model.layers.{i}.$\\undefinedcmd{{x}}$.\u6f22\U0001f600.q_proj": planted_factors(
            4, 4, 2, seed=i
        )
        for i in range(3300)
    }
    directory = write_adapter(tmp_path / "wide", modules, lora_config(r=2))
    proc = subprocess.run(
        [*CLI, "annotate", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    png = (directory / "gradience" / "utilization.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_heatmap_labels_match_the_pairwise_rule() -> None:
    from gradience_hub.publish.plot import _labels

    rng = np.random.default_rng(0)
    parts = ["encoder", "decoder", "attn", "mlp", "q", "k", "v", "x"]
    keys = list(
        dict.fromkeys(
            (
                *rng.choice(parts, size=rng.integers(1, 4)).tolist(),
                "*",
                *rng.choice(parts, size=rng.integers(1, 4)).tolist(),
            )
            for _ in range(300)
        )
    )
    keys += [("plain", "name"), ("other", "name")]

    def suffix(key, n):  # the rule as it was first written: every key against every other
        if "*" not in key:
            return key
        tail = key[key.index("*") + 1 :]
        return tail[-n:] if 0 < n <= len(tail) else key[max(0, len(key) - n) :]

    expected = {}
    for key in keys:
        n = 1
        while n < len(key) and any(o != key and suffix(o, n) == suffix(key, n) for o in keys):
            n += 1
        expected[key] = ".".join(suffix(key, n))
    assert _labels(keys) == expected


# --------------------------------------------------------------------------- the writer


def test_write_file_rules(tmp_path: Path) -> None:
    existing = tmp_path / "a.txt"
    existing.write_text("old")
    os.chmod(existing, 0o604)
    _io.write_file(existing, "new")
    assert existing.read_text() == "new" and stat.S_IMODE(existing.stat().st_mode) == 0o604
    with pytest.raises(UsageError, match="it is a directory"):
        _io.write_file(tmp_path, "x")
    with pytest.raises(UsageError, match="outside that directory"):
        _io.write_file(tmp_path / "in" / ".." / ".." / "out.txt", "x", within=tmp_path / "in")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no temporary left


def test_the_comment_marker_is_the_one_the_modules_use() -> None:
    from gradience_hub import github
    from gradience_hub.publish import render

    assert github.MARKER == ann.COMMENT_MARKER == render.COMMENT_MARKER == COMMENT_MARKER
    audit = AuditReport.from_dict(json.loads((GOLDEN / "audit.json").read_text()))
    text = render.render("comment", audit, None)
    assert text.startswith(COMMENT_MARKER + "\n")
    with pytest.raises(CardError):
        splice_readme("x", f"a {SECTION_END}", base_model=None)


def test_no_third_party_warnings_on_stderr(repo, hub_server) -> None:
    """huggingface_hub warns on a card without metadata and on a commit with nothing left to
    send ("No files have been modified"); both cases are ours to report, in our words."""
    env = hub_server.subprocess_env()
    for _ in range(2):  # the second run has nothing to commit
        proc = subprocess.run(
            [*CLI, "annotate", "alice/adapter", "--direct"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert [line[:9] for line in proc.stderr.splitlines()] == ["Auditing "]
    assert "up to date (nothing to commit)" in proc.stdout


def test_read_json_turns_every_bad_document_into_a_record_error(tmp_path: Path) -> None:
    from gradience_hub.errors import RecordError

    cases = {
        "deep.json": b"[" * 100_000 + b"]" * 100_000,
        "latin1.json": b'{"a": "caf\xe9"}',
        "list.json": b"[1, 2]",
        "broken.json": b"{",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(RecordError) as err:
            _io.read_json(tmp_path / name, "audit.json")
        assert err.value.exit_code == 2 and name in err.value.message
    (tmp_path / "ok.json").write_text('{"a": 1}')
    assert _io.read_json(tmp_path / "ok.json", "audit.json") == {"a": 1}
