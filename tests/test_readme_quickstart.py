"""The README's quick start, run as written.

The commands are read from the README itself: every fenced block that follows a
``<!-- quickstart -->`` line. They run offline (``HF_HUB_OFFLINE=1``, no token, an unreachable
``HF_ENDPOINT``), one subprocess each, with the test venv's ``bin`` on ``PATH`` (what
``. .venv/bin/activate`` does), in a temporary folder laid out as ``make demo`` leaves
``demo-output/`` (gradience_hub/demo.py): ``adapter/`` (a PEFT adapter, r=16, with the model card
peft writes), ``audit.json`` and ``bench.json`` (a PASS record of that adapter, linked by its
content hash). Training the demo's adapter takes minutes, so a synthetic adapter stands in.

Each command must exit 0 and print its key lines; and every line of the output the README shows
under a command that holds no digit (numbers differ on the stand-in adapter) and no elided part
must be a line of the real output, so the README's examples cannot drift from the program.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from gradience_hub.identity import HASH_KEY, content_sha256
from tests.factories import llama_like_adapter

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
GOLDEN = Path(__file__).parent / "golden"
BIN = Path(sys.executable).parent
MARKER = "<!-- quickstart -->"
ACTIVATE = ". .venv/bin/activate"

# What each subcommand must print (substrings of stdout + stderr).
KEY_LINES = {
    "audit": ["GRADIENCE LoRA AUDIT", "Summary:", "Suggested ranks:"],
    "compress": ["GRADIENCE LoRA COMPRESSION", "Parameter reduction:", "Relative Frobenius error:"],
    "render": ["<!-- gradience-hub:comment -->", "PASS"],
    "annotate": [
        "Dry run: nothing was written",
        "gradience/audit.json",
        "<!-- gradience:start -->",
    ],
}


@dataclass
class Step:
    command: str
    shown: list[str]  # the output the README shows under the command (may be empty)


def _fenced_block(lines: list[str], start: int) -> tuple[list[str], int]:
    """The lines of the fenced block opening at or after ``start`` (blank lines skipped), and the
    index after its closing fence."""
    i = start
    while i < len(lines) and not lines[i].strip():
        i += 1
    assert i < len(lines) and lines[i].startswith("```"), f"README.md line {i + 1}: no code block"
    fence = lines[i][: len(lines[i]) - len(lines[i].lstrip("`"))]
    body: list[str] = []
    i += 1
    while i < len(lines) and not lines[i].startswith(fence):
        body.append(lines[i])
        i += 1
    assert i < len(lines), "README.md: a quick-start code block is never closed"
    return body, i + 1


def quickstart_steps(text: str) -> list[Step]:
    """The quick-start commands in README order; the last command of each block carries the
    output the README shows after it (the next fenced block, when only blank lines separate
    them)."""
    lines = text.splitlines()
    steps: list[Step] = []
    for index, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        body, after = _fenced_block(lines, index + 1)
        shown: list[str] = []
        j = after
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j < len(lines) and lines[j].startswith("```"):
            shown, _ = _fenced_block(lines, j)
        for command in _join_continuations(body):
            steps.append(Step(command, []))
        if steps:
            steps[-1].shown = shown
    return steps


def _join_continuations(body: list[str]) -> list[str]:
    commands: list[str] = []
    pending = ""
    for raw in body:
        line = raw.strip()
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        line = pending + line
        pending = ""
        if line and not line.startswith("#"):
            commands.append(line)
    return commands


def _subcommand(command: str) -> str:
    words = shlex.split(command, comments=True)
    assert words[0] == "gradience-hub", f"not a gradience-hub command: {command}"
    return words[1]


def _norm(line: str) -> str:
    return " ".join(line.split())


def _checkable(line: str) -> bool:
    """A shown output line that must appear as-is: no digits (the stand-in's numbers differ), no
    elision, no stand-in for the reader's own path."""
    stripped = line.strip()
    return (
        bool(stripped)
        and not re.search(r"\d", stripped)
        and "..." not in stripped
        and "/path/to/" not in stripped
    )


# -------------------------------------------------------------------------- the demo's layout


@pytest.fixture
def demo_root(tmp_path: Path) -> Path:
    """A folder holding ``demo-output/`` as ``make demo`` leaves it (what the commands read)."""
    out = tmp_path / "demo-output"
    adapter = llama_like_adapter(out / "adapter", n_layers=2, d=64, r=16)
    # peft's save_pretrained writes a model card next to the adapter; annotate splices into it.
    (adapter / "README.md").write_text(
        "---\nbase_model: test/tiny-base\nlibrary_name: peft\n---\n\n# Model Card\n\n"
        "### Framework versions\n\n- PEFT 0.0.0",
        encoding="utf-8",
    )
    record = json.loads((GOLDEN / "bench_pass.json").read_text(encoding="utf-8"))
    record["adapter"].update(
        source=str(adapter),
        revision=None,
        allocated_rank=16,
        **{
            HASH_KEY: content_sha256(
                adapter / "adapter_config.json", adapter / "adapter_model.safetensors"
            )
        },
    )
    (out / "bench.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    audit = subprocess.run(
        [str(BIN / "gradience-hub"), "audit", str(adapter), "--json"],
        capture_output=True,
        text=True,
        env=_environment(tmp_path),
        check=True,
        timeout=120,
    )
    (out / "audit.json").write_text(audit.stdout, encoding="utf-8")
    return tmp_path


def _environment(home: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "GITHUB_TOKEN", "GRADIENCE_DEBUG")
        and not key.startswith(("INPUT_", "GITHUB_"))
    }
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # what `. .venv/bin/activate` does
        VIRTUAL_ENV=str(BIN.parent),
        HF_HUB_OFFLINE="1",
        HF_HOME=str(home / "hf-home"),  # no saved login, an empty cache
        HF_ENDPOINT="http://127.0.0.1:9",  # nothing listens: a Hub call fails at once
        NO_COLOR="1",
    )
    return env


# ---------------------------------------------------------------------------------- the tests


def test_the_quick_start_is_in_the_readme() -> None:
    steps = quickstart_steps(README.read_text(encoding="utf-8"))
    commands = [s.command for s in steps]
    assert commands and commands[0].split("#")[0].strip() == ACTIVATE, commands[:1]
    assert (ROOT / "Makefile").read_text(encoding="utf-8").count("-m venv $(VENV)") >= 1
    covered = {_subcommand(c) for c in commands[1:]}
    assert {"audit", "compress", "render", "annotate"} <= covered, covered
    for command in commands[1:]:
        assert "demo-output/" in command, f"not run on the demo's output: {command}"
    # The set-up words the README promises stay the only set-up commands.
    text = README.read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text


def test_the_quick_start_runs_offline_on_the_demo_layout(demo_root: Path) -> None:
    steps = quickstart_steps(README.read_text(encoding="utf-8"))
    env = _environment(demo_root)
    before = {
        p: p.read_bytes() for p in (demo_root / "demo-output" / "adapter").iterdir() if p.is_file()
    }
    ran = 0
    for step in steps:
        command = step.command.split(" #")[0].strip()
        if command == ACTIVATE:
            assert (ROOT / ".venv" / "bin").is_dir() or BIN.is_dir()
            continue
        proc = subprocess.run(
            ["bash", "-c", command],
            cwd=demo_root,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{command}\nexit {proc.returncode}\n{output}"
        for key in KEY_LINES[_subcommand(command)]:
            assert key in output, f"{command}: {key!r} missing from\n{output}"
        actual = {_norm(line) for line in output.splitlines()}
        for line in filter(_checkable, step.shown):
            assert _norm(line) in actual, (
                f"README.md shows {line!r} under `{command}`, which does not print it:\n{output}"
            )
        ran += 1
    assert ran >= 4
    # --dry-run wrote nothing into the adapter; compress wrote a new adapter beside it.
    after = {
        p: p.read_bytes() for p in (demo_root / "demo-output" / "adapter").iterdir() if p.is_file()
    }
    assert after == before
    assert not (demo_root / "demo-output" / "adapter" / "gradience").exists()
    assert (demo_root / "demo-output" / "adapter-r4" / "adapter_config.json").is_file()


def test_the_extractor_reads_blocks_after_the_marker_only() -> None:
    text = "\n".join(
        [
            "```",
            "gradience-hub not-this",
            "```",
            MARKER,
            "```",
            ". .venv/bin/activate  # a comment",
            "gradience-hub audit demo-output/adapter \\",
            "  --layers",
            "```",
            "",
            "```",
            "GRADIENCE LoRA AUDIT",
            "```",
            "Prose.",
            "```",
            "gradience-hub nor-this",
            "```",
        ]
    )
    steps = quickstart_steps(text)
    assert [s.command for s in steps] == [
        ". .venv/bin/activate  # a comment",
        "gradience-hub audit demo-output/adapter --layers",
    ]
    assert steps[-1].shown == ["GRADIENCE LoRA AUDIT"]
