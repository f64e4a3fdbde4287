"""plot.matplotlib_loading: matplotlib imported on a joined, non-daemon thread (a fresh
interpreter each time, since this test process may have imported matplotlib already)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_matplotlib_is_imported_while_the_body_runs_and_joined_after() -> None:
    done = _run(
        """
        import sys, threading
        from gradience_hub.publish import plot
        assert "matplotlib" not in sys.modules
        with plot.matplotlib_loading():
            names = [t.name for t in threading.enumerate()]
            assert "gradience-matplotlib-import" in names, names
            daemon = [t.daemon for t in threading.enumerate() if t.name.startswith("gradience-")]
            assert daemon == [False], daemon
        assert [t.name for t in threading.enumerate()] == ["MainThread"]
        assert all(m in sys.modules for m in plot._MATPLOTLIB_MODULES)
        print("ok")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"


def test_an_error_in_the_body_leaves_after_the_join_and_the_process_exits_cleanly() -> None:
    done = _run(
        """
        import sys, threading
        from gradience_hub.publish import plot
        try:
            with plot.matplotlib_loading():
                raise KeyError("download failed")
        except KeyError:
            assert [t.name for t in threading.enumerate()] == ["MainThread"]
        sys.exit(2)
        """
    )
    # exit 2 as asked, not SIGABRT (-6) from a thread left inside matplotlib's extension
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stderr == ""


def _audit(utilizations: list[float]) -> dict:
    layers = [
        {
            "name": f"model.layers.{i}.self_attn.q_proj",
            "module_type": "attention",
            "layer_index": i,
            "utilization": u,
        }
        for i, u in enumerate(utilizations)
    ]
    return {"layers": layers, "summary": {"allocated_rank": 8, "utilization_mean": 0.3}}


def test_drawn_ahead_is_the_same_picture_and_another_audit_is_drawn_anew() -> None:
    import threading

    from gradience_hub.publish import plot

    first, second = _audit([0.1, 0.5, 0.9]), _audit([0.2, 0.2, 0.7])
    with plot.drawing_ahead(first) as png:
        ahead = png(first)
        other = png(second)
    assert ahead == plot.heatmap_png(first) and ahead.startswith(b"\x89PNG")
    assert other == plot.heatmap_png(second) != ahead
    assert "gradience-heatmap" not in [t.name for t in threading.enumerate()]


def test_a_drawing_error_reaches_the_caller_when_it_asks() -> None:
    import pytest

    from gradience_hub.errors import RecordError
    from gradience_hub.publish import plot

    empty = {"layers": [], "summary": {}}
    with plot.drawing_ahead(empty) as png, pytest.raises(RecordError, match="no modules"):
        png(empty)
    # never asked: the error stays in the thread, which is joined
    with plot.drawing_ahead(empty):
        pass
