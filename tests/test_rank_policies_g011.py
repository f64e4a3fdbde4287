"""Rank policies agree with gradience 0.11.0 itself, module by module (issue 23 item 1).

gradience 0.11.0 is installed from PyPI (tests/gradience011.py) and run on the same adapters:
its ``gradience audit --json --layers --rank-policies energy@0.90,knee,erank,oht`` for four
policies, its ``energy_rank_95`` row field for energy@0.95 (its CLI maps ``energy@0.95`` to its
0.90 default), and its Python ``audit_lora_peft_dir(rank_policies=["stable_rank_ceil"])`` for
stable-ceil, which its CLI does not offer. Two adapters: one shaped like the demo's (MiniLM,
6 layers x query/value, 384 x 384, r=16, float32) and one shaped like Mistral-7B (q,k,v,o and
the MLP of 2 layers: 4096 x 4096, 1024 x 4096, 14336 x 4096, 4096 x 14336; r=16, bf16), with
spectra that exercise every policy's branches (decaying, spiked, flat, two-level).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from gradience_hub.audit import run_audit
from gradience_hub.rank_policies import DEFAULT_POLICIES, apply_policies, parse_policies
from tests.factories import PREFIX, lora_config, planted_factors, write_adapter
from tests.gradience011 import gradience011, run_python

SPECS = parse_policies(DEFAULT_POLICIES + ",energy@0.95")


def _spectrum(kind: int, r: int, rng: np.random.Generator) -> np.ndarray:
    if kind == 0:  # trained-like: geometric decay at a random rate
        return np.geomspace(1.0, 10 ** -rng.uniform(0.5, 4), r)
    if kind == 1:  # one spike over a noise floor
        return np.concatenate([[rng.uniform(3, 8)], np.sort(rng.uniform(0.05, 0.3, r - 1))[::-1]])
    if kind == 2:  # nearly flat: no knee
        return np.sort(rng.uniform(0.9, 1.0, r))[::-1]
    # two levels: a few strong directions, then weak ones
    strong = int(rng.integers(2, r // 2))
    high = np.sort(rng.uniform(1.0, 2.0, strong))[::-1]
    return np.concatenate([high, np.sort(rng.uniform(0.01, 0.1, r - strong))[::-1]])


def demo_shaped(directory: Path) -> Path:
    rng = np.random.default_rng(23)
    modules = {}
    for i in range(6):
        for j, proj in enumerate(("query", "value")):
            spectrum = _spectrum((2 * i + j) % 4, 16, rng)
            modules[f"bert.encoder.layer.{i}.attention.self.{proj}"] = planted_factors(
                384, 384, 16, spectrum, seed=2 * i + j
            )
    config = lora_config(r=16, lora_alpha=32, target_modules=["query", "value"])
    return write_adapter(directory, modules, config)


def mistral_shaped(directory: Path) -> Path:
    rng = np.random.default_rng(7)
    shapes = {
        "self_attn.q_proj": (4096, 4096),
        "self_attn.k_proj": (1024, 4096),
        "self_attn.v_proj": (1024, 4096),
        "self_attn.o_proj": (4096, 4096),
        "mlp.gate_proj": (14336, 4096),
        "mlp.up_proj": (14336, 4096),
        "mlp.down_proj": (4096, 14336),
    }
    modules = {}
    n = 0
    for i in range(2):
        for proj, (d_out, d_in) in shapes.items():
            spectrum = _spectrum(n % 4, 16, rng) * 0.01
            modules[f"model.layers.{i}.{proj}"] = planted_factors(d_out, d_in, 16, spectrum, seed=n)
            n += 1
    targets = [p.split(".")[-1] for p in shapes]
    config = lora_config(r=16, lora_alpha=16, target_modules=targets)
    return write_adapter(directory, modules, config, dtype=ml_dtypes.bfloat16)


_STABLE_CEIL = """
import json, sys
from gradience.vnext.audit import audit_lora_peft_dir
result = audit_lora_peft_dir(sys.argv[1], compute_udr=False, rank_policies=["stable_rank_ceil"])
print(json.dumps({l.name: l.rank_suggestions["stable_rank_ceil"]["k"] for l in result.layers}))
"""


def theirs(directory: Path) -> dict[str, dict[str, int]]:
    """gradience 0.11.0's k per module (names without PEFT's prefix) and policy (our names)."""
    proc = subprocess.run(
        [
            str(gradience011()),
            "audit",
            "--peft-dir",
            str(directory),
            "--json",
            "--layers",
            "--no-udr",
            "--rank-policies",
            "energy@0.90,knee,erank,oht",
        ],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout)["layer_data"]["layer_rows"]
    stable = json.loads(run_python(_STABLE_CEIL, str(directory)))
    out = {}
    for row in rows:
        ks = row["rank_suggestions"]
        out[row["name"].removeprefix(PREFIX)] = {
            "energy@0.90": ks["energy_threshold"]["k"],
            "energy@0.95": row["energy_rank_95"],
            "knee": ks["knee"]["k"],
            "erank": ks["erank"]["k"],
            "oht": ks["oht"]["k"],
            "stable-ceil": stable[row["name"]],
        }
    return out


def ours(directory: Path) -> dict[str, dict[str, int]]:
    report = run_audit(str(directory))
    return {
        layer.name: apply_policies(
            SPECS, np.array(layer.singular_values), (layer.shape[0], layer.shape[1]), layer.r
        ).ks
        for layer in report.layers
    }


@pytest.mark.parametrize("make", [demo_shaped, mistral_shaped], ids=["demo", "mistral-7b"])
def test_same_k_as_gradience_011_for_every_module_and_policy(make, tmp_path: Path) -> None:
    directory = make(tmp_path / "adapter")
    expected = theirs(directory)
    got = ours(directory)
    assert set(got) == set(expected) and len(got) in (12, 14)
    mismatches = [
        (name, policy, k, got[name][policy])
        for name, ks in expected.items()
        for policy, k in ks.items()
        if got[name][policy] != k
    ]
    assert not mismatches
    # the adapters exercise the policies: they do not all agree, and none is constant
    for policy in ("energy@0.90", "knee", "erank", "oht", "stable-ceil"):
        assert len({ks[policy] for ks in expected.values()}) > 1, policy
