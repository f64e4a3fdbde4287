"""The wheel a PyPI user gets: built with ``python -m build``, installed alone (core, no extras)
in a fresh venv under the lock, and used as a new user would: ``--help``, audit, compress,
render and annotate on a local clone, with the templates it ships and without torch.

A ``torch`` package that records any import attempt stands in the venv: a guarded
``try: import torch`` would pass silently against a missing torch, not against this one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.factories import llama_like_adapter

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"
PIP = (sys.executable, "-m", "pip")
COMMANDS = ("audit", "compress", "render", "annotate", "merge-audit", "action", "serve", "scan")


class Installed:
    def __init__(self, prefix: Path, sentinel: Path) -> None:
        self.prefix, self.sentinel = prefix, sentinel
        self.exe = prefix / "bin" / "gradience-hub"

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {"PATH": f"{self.prefix / 'bin'}:/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
        return subprocess.run(
            [str(self.exe), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
        )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    # Built from a copy of what the sdist holds: setuptools writes build/ and *.egg-info into
    # the source tree, and two test workers building the same tree at once break each other.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "gradience_hub",
        source / "gradience_hub",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(dist), str(source)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return dist


@pytest.fixture(scope="module")
def installed(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    prefix = tmp_path_factory.mktemp("core-venv")
    venv.create(prefix, with_pip=False, clear=True)
    [wheel] = built.glob("gradience_hub-*.whl")
    python = prefix / "bin" / "python"
    subprocess.run(
        [*PIP, "--python", str(python), "install", "--quiet", "-c", str(LOCK), str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    sentinel = prefix / "torch-was-imported"
    (site / "torch").mkdir()
    (site / "torch" / "__init__.py").write_text(
        f"open({str(sentinel)!r}, 'a').close()\nraise ImportError('torch is not installed')\n"
    )
    return Installed(prefix, sentinel)


def test_the_sdist_and_wheel_ship_the_templates_and_no_tests(built: Path) -> None:
    [wheel] = built.glob("gradience_hub-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    templates = {n.rsplit("/", 1)[-1] for n in names if "/templates/" in n}
    assert {"card_section.md.j2", "step_summary.md.j2", "pr_comment.md.j2"} <= templates
    assert "gradience_hub/py.typed" in names
    assert not [n for n in names if n.startswith("tests/")]
    [sdist] = built.glob("gradience_hub-*.tar.gz")
    assert sdist.stat().st_size > 0


def test_the_core_install_has_no_extras(installed: Installed) -> None:
    python = installed.prefix / "bin" / "python"
    probe = (
        "import importlib.util as u; "
        "print([m for m in ('peft', 'transformers', 'fastapi', 'ray') if u.find_spec(m)])"
    )
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    # scan's dataset writer is core (pyproject's dependencies): pyarrow comes with the wheel.
    probe = "import importlib.util as u; print(bool(u.find_spec('pyarrow')))"
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_works_from_the_wheel(installed: Installed, command: str | None) -> None:
    proc = installed.run(*([command] if command else []), "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: gradience-hub"), proc.stdout
    assert not installed.sentinel.exists()


def test_audit_compress_render_annotate_from_the_wheel_without_torch(
    installed: Installed, tmp_path: Path
) -> None:
    adapter = llama_like_adapter(tmp_path / "adapter", n_layers=2, d=32, r=8)
    audit = installed.run("audit", str(adapter), "--json", "--output", str(tmp_path / "a.json"))
    assert audit.returncode == 0, audit.stderr
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["summary"]["allocated_rank"] == 8

    out = tmp_path / "compressed"
    compress = installed.run("compress", str(adapter), "--output", str(out), "--rank", "2")
    assert compress.returncode == 0, compress.stderr
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 2

    card = installed.run("render", "--audit", str(tmp_path / "a.json"), "--format", "card")
    assert card.returncode == 0, card.stderr
    assert card.stdout.startswith("<!-- gradience:start -->"), card.stdout[:200]

    clone = tmp_path / "clone"
    shutil.copytree(adapter, clone)
    (clone / "README.md").write_text("# my adapter\n\nText the user wrote.\n")
    annotate = installed.run("annotate", str(clone))
    assert annotate.returncode == 0, annotate.stderr
    readme = (clone / "README.md").read_text()
    # Card metadata goes in front; the user's text stays as written.
    assert readme.startswith("---\nlibrary_name: peft\n")
    assert "\n---\n# my adapter\n\nText the user wrote.\n" in readme
    assert "<!-- gradience:start -->" in readme
    assert (clone / "gradience" / "audit.json").is_file()
    assert not installed.sentinel.exists(), "the core commands imported torch"
