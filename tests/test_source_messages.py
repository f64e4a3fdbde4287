"""SOURCE messages that point the right way (issue 22): a SOURCE that looks like a path and
does not exist is a missing local path (exit 2, naming the part that exists), never a Hub
lookup; a PEFT weights file with its adapter_config.json beside it audits its directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gradience_hub.adapter import parse_source
from gradience_hub.adapter.source import looks_like_path
from gradience_hub.cli import main
from gradience_hub.errors import AdapterError
from tests.factories import llama_like_adapter


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


@pytest.fixture
def in_tmp(tmp_path: Path):  # type: ignore[no-untyped-def]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(cwd)


def test_what_looks_like_a_path(in_tmp: Path) -> None:
    (in_tmp / "demo-output").mkdir()
    for source in ("./x", "/abs/x", "~/x", "a/b/c", "demo-output/adapterx", "a/b/c@main"):
        assert looks_like_path(source), source
    for source in ("org/name", "org/name@main", "org/name@refs/pr/1", "adapterx"):
        assert not looks_like_path(source), source


def test_a_missing_path_names_the_part_that_exists(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (in_tmp / "demo-output").mkdir()
    code, out, err = run_cli(["audit", "demo-output/adapterx"], capsys)
    assert (code, out) == (2, "")
    assert err.splitlines()[0] == "Error: no such local directory or file: demo-output/adapterx"
    assert "demo-output/ exists but has no adapterx" in err
    code, _, err = run_cli(["audit", "./gone/deeper"], capsys)
    assert code == 2 and "no such local directory or file: ./gone/deeper" in err
    with pytest.raises(AdapterError, match="no such local directory or file") as caught:
        parse_source(str(in_tmp / "demo-output" / "a" / "b"))
    assert caught.value.exit_code == 2
    assert "demo-output/ exists but has no a" in str(caught.value.hint)


def test_an_id_is_still_a_hub_id(in_tmp: Path) -> None:
    spec = parse_source("org/name@v1")
    assert (spec.repo_id, spec.revision, spec.local_path) == ("org/name", "v1", None)


def test_a_peft_weights_file_audits_its_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = llama_like_adapter(tmp_path / "adapter", n_layers=2, d=16, r=4)
    weights = directory / "adapter_model.safetensors"
    assert parse_source(str(weights)).local_path == directory.resolve()
    code, out, err = run_cli(["audit", str(weights), "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["source"]["path"] == str(directory.resolve())
    _, dir_out, _ = run_cli(["audit", str(directory), "--json"], capsys)
    assert json.loads(dir_out)["summary"] == report["summary"]


def test_a_weights_file_without_its_config_is_still_read_as_a_lora_file(tmp_path: Path) -> None:
    directory = llama_like_adapter(tmp_path / "adapter", n_layers=2, d=16, r=4)
    (directory / "adapter_config.json").unlink()
    weights = directory / "adapter_model.safetensors"
    assert parse_source(str(weights)).local_path == weights.resolve()
