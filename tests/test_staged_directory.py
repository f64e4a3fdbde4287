"""_io.staged_directory: the output directory holds a whole result or what it held before."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradience_hub._io import staged_directory


def test_a_finished_body_replaces_the_target_whole(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with staged_directory(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        (tmp / "new.txt").write_text("new")
        assert (target / "old.txt").read_text() == "old"  # untouched until the body ends
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left


def test_a_failing_body_leaves_the_target_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(KeyError), staged_directory(target) as tmp:
        (tmp / "half.txt").write_text("half")
        raise KeyError("the self-check failed")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_missing_parent_is_made(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out"
    with staged_directory(target) as tmp:
        (tmp / "x").write_text("x")
    assert (target / "x").read_text() == "x"
