"""``explain`` (issue 23 item 2): one module's spectrum, every policy's threshold and k, the
sentence, from a SOURCE and from its audit.json alike; Markdown escaping; the plot."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from gradience_hub.audit import run_audit
from gradience_hub.audit.explain import explain
from gradience_hub.audit.report import AuditReport
from gradience_hub.errors import UsageError
from gradience_hub.publish.explain import explain_markdown, explain_plot, explain_text
from tests.factories import lora_config, planted_factors, write_adapter

# s = 1 (x4) then 1e-3 (x12), worked in tests/test_rank_policies.py: energy 4, knee 5, erank 5,
# oht 4, stable-ceil 5
SPECTRUM = np.array([1.0] * 4 + [1e-3] * 12)


def _adapter(tmp_path: Path, name: str = "model.layers.0.self_attn.q_proj") -> Path:
    B, A = planted_factors(64, 64, 16, SPECTRUM, seed=3)
    config = lora_config(r=16, lora_alpha=16)  # scale 1: the singular values are SPECTRUM
    return write_adapter(tmp_path / "adapter", {name: (B, A)}, config, dtype=np.float64)


def test_explain_from_source_and_from_audit_json(tmp_path: Path) -> None:
    report = run_audit(str(_adapter(tmp_path)))
    e = explain(report, "q_proj")  # a unique suffix is enough
    assert e.module == "model.layers.0.self_attn.q_proj" and e.r == 16
    np.testing.assert_allclose(e.singular_values, SPECTRUM, rtol=1e-9)
    total = 4 + 12e-6
    np.testing.assert_allclose(
        e.cumulative_energy[:5],
        [1 / total, 2 / total, 3 / total, 4 / total, (4 + 1e-6) / total],
        rtol=1e-9,
    )
    assert e.policies.ks == {"energy@0.90": 4, "knee": 5, "erank": 5, "oht": 4, "stable-ceil": 5}
    assert (e.policies.spread, e.policies.consensus) == (1, 5)
    assert e.why.startswith("energy@0.90 suggests 4 and knee 5: energy@0.90 keeps the 4")
    oht = next(p for p in e.policies.results if p.policy == "oht")
    assert oht.threshold == pytest.approx(2.86 * 1e-3, rel=1e-6)  # omega(1) x median
    erank = next(p for p in e.policies.results if p.policy == "erank")
    p = np.array([1.0] * 4 + [1e-3] * 12) / 4.012
    assert erank.threshold == pytest.approx(math.exp(-np.sum(p * np.log(p))), rel=1e-9)
    # the same from audit.json (its rows keep every singular value)
    reloaded = AuditReport.from_dict(report.to_dict())
    assert explain(reloaded, e.module) == e
    text = explain_text(e)
    assert "oht" in text and "consensus (median) k=5" in text and e.why in text


def test_explain_unknown_or_ambiguous_module(tmp_path: Path) -> None:
    report = run_audit(str(_adapter(tmp_path)))
    with pytest.raises(UsageError, match="no audited module") as err:
        explain(report, "model.layers.0.self_attn.q_prj")
    assert "did you mean model.layers.0.self_attn.q_proj" in (err.value.hint or "")


def test_markdown_escapes_the_module_name_and_the_plot_is_stable(tmp_path: Path) -> None:
    hostile = "model.layers.0.<img src=x onerror=alert(1)>*q_proj*"
    report = run_audit(str(_adapter(tmp_path, hostile)))
    e = explain(report, hostile)
    out = explain_markdown(e)
    assert "<img" not in out and "*q_proj*" not in out
    assert "| oht | 4 |" in out and "| 1 | 1 |" in out
    png = explain_plot(e, tmp_path / "x.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert explain_plot(e, tmp_path / "y.png").read_bytes() == png.read_bytes()
