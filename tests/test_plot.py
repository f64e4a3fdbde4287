"""The utilization heatmap: a valid, sensibly sized, byte-for-byte reproducible PNG."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gradience_hub.errors import RecordError
from gradience_hub.publish.plot import utilization_grid, utilization_heatmap

GOLDEN = Path(__file__).parent / "golden"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the signature."""
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def png_text_keys(data: bytes) -> list[bytes]:
    """Keywords of the tEXt/iTXt chunks."""
    keys, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind in (b"tEXt", b"iTXt", b"zTXt"):
            keys.append(data[pos + 8 : pos + 8 + length].split(b"\0", 1)[0])
        pos += 12 + length
    return keys


def synthetic(n_layers: int, modules: dict[str, str], indexed: bool = True) -> dict[str, Any]:
    layers = []
    for i in range(n_layers):
        for j, (name, kind) in enumerate(modules.items()):
            layers.append(
                {
                    "name": f"model.layers.{i}.{name}" if indexed else name,
                    "module_type": kind,
                    "layer_index": i if indexed else None,
                    "utilization": ((i * 7 + j * 13) % 100) / 100,
                }
            )
    return {"summary": {"allocated_rank": 16, "utilization_mean": 0.5}, "layers": layers}


@pytest.fixture
def audit() -> dict[str, Any]:
    return json.loads((GOLDEN / "audit.json").read_text(encoding="utf-8"))


def test_valid_png_of_sensible_size(audit, tmp_path: Path) -> None:
    path = utilization_heatmap(audit, tmp_path / "gradience" / "utilization.png")
    assert path == tmp_path / "gradience" / "utilization.png"
    width, height = png_size(path.read_bytes())
    assert 600 <= width <= 1800 and 300 <= height <= 1600
    assert not list(path.parent.glob(".*tmp"))


def test_deterministic_bytes(audit, tmp_path: Path) -> None:
    first = utilization_heatmap(audit, tmp_path / "a.png").read_bytes()
    second = utilization_heatmap(json.loads(json.dumps(audit)), tmp_path / "b.png").read_bytes()
    assert first == second
    assert b"Software" not in png_text_keys(first)


def test_deterministic_across_processes(audit, tmp_path: Path) -> None:
    """A fresh interpreter (new font cache state, new hash seed) draws the same bytes."""
    here = utilization_heatmap(audit, tmp_path / "here.png").read_bytes()
    code = (
        "import json, sys; from gradience_hub.publish.plot import utilization_heatmap;"
        "utilization_heatmap(json.load(open(sys.argv[1])), sys.argv[2])"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(GOLDEN / "audit.json"), str(tmp_path / "there.png")],
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "123"},
    )
    assert (tmp_path / "there.png").read_bytes() == here


def test_single_module(tmp_path: Path) -> None:
    audit = synthetic(1, {"self_attn.q_proj": "attention"})
    width, height = png_size(utilization_heatmap(audit, tmp_path / "one.png").read_bytes())
    assert width >= 600 and height >= 300


def test_modules_without_layer_index(tmp_path: Path) -> None:
    audit = synthetic(1, {"fc1": "mlp", "fc2": "mlp", "head.proj": "other"}, indexed=False)
    rows, groups, columns, matrix = utilization_grid(audit["layers"])
    assert (rows, groups, columns) == (["fc1", "fc2", "head.proj"], ["mlp", "mlp", "other"], ["–"])
    assert matrix.tolist() == [[0.0], [0.13], [0.26]]
    assert png_size(utilization_heatmap(audit, tmp_path / "flat.png").read_bytes())[0] >= 600


def test_eighty_layers_stay_readable(tmp_path: Path) -> None:
    modules = {
        "self_attn.q_proj": "attention",
        "self_attn.k_proj": "attention",
        "self_attn.v_proj": "attention",
        "self_attn.o_proj": "attention",
        "mlp.gate_proj": "mlp",
        "mlp.up_proj": "mlp",
        "mlp.down_proj": "mlp",
    }
    audit = synthetic(80, modules)
    audit["layers"].append(  # a module outside the blocks joins the "–" column
        {"name": "lm_head", "module_type": "other", "layer_index": None, "utilization": 0.3}
    )
    width, height = png_size(utilization_heatmap(audit, tmp_path / "big.png").read_bytes())
    assert width <= 1800 and height <= 1600


def test_missing_values_and_odd_rows(tmp_path: Path) -> None:
    audit = synthetic(3, {"self_attn.q_proj": "attention", "mlp.up_proj": "mlp"})
    audit["layers"][0]["utilization"] = None
    audit["layers"][1]["utilization"] = float("nan")
    audit["layers"][2]["module_type"] = "something-else"
    audit["summary"] = {}
    rows, groups, columns, matrix = utilization_grid(audit["layers"])
    # None and NaN are empty cells; a module keeps the group it was first seen with
    assert (rows, groups, columns) == (["q_proj", "up_proj"], ["attention", "mlp"], ["0", "1", "2"])
    values = matrix.tolist()
    assert math.isnan(values[0][0]) and math.isnan(values[1][0])
    assert [row[1:] for row in values] == [[0.07, 0.14], [0.2, 0.27]]
    assert png_size(utilization_heatmap(audit, tmp_path / "odd.png").read_bytes())[0] >= 600


def test_no_modules_is_a_record_error(tmp_path: Path) -> None:
    with pytest.raises(RecordError):
        utilization_heatmap({"summary": {}, "layers": []}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_row_labels() -> None:
    from gradience_hub.publish.plot import _labels, _row_key

    keys = [
        _row_key("encoder.layers.0.self_attn.q_proj", 0),
        _row_key("decoder.layers.0.self_attn.q_proj", 0),
        _row_key("decoder.layers.0.encoder_attn.q_proj", 0),
        _row_key("decoder.layers.0.mlp.fc1", 0),
        ("lm_head",),
    ]
    labels = _labels(keys)
    assert labels[keys[2]] == "encoder_attn.q_proj"
    assert labels[keys[3]] == "fc1"
    assert labels[keys[4]] == "lm_head"
    assert len(set(labels.values())) == len(keys)


def test_leaves_the_matplotlib_backend_alone(audit, tmp_path: Path) -> None:
    code = (
        "import json, sys, matplotlib; matplotlib.use('svg'); "
        "from gradience_hub.publish.plot import utilization_heatmap;"
        "utilization_heatmap(json.load(open(sys.argv[1])), sys.argv[2]);"
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(GOLDEN / "audit.json"), str(tmp_path / "p.png")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.split() == ["svg", "False"]
