"""The utilization heatmap: a valid, sensibly sized, byte-for-byte reproducible PNG that draws
the audit's utilization: one cell per module and layer, in the colour the colormap gives its
value, labelled with the modules and layers.

utilization_heatmap returns only the path, so the Figure it draws is captured where it is
saved (the ``drawn`` fixture) and the PNG is decoded back (matplotlib.image) to check pixels."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
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


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The matplotlib Figures utilization_heatmap saves, captured at ``Figure.savefig`` (the
    function returns only the path): their Axes, image, labels and texts are what it drew."""
    from matplotlib.figure import Figure

    figures: list[Any] = []
    real = Figure.savefig

    def savefig(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        figures.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return figures


def heatmap_axes(figures: list[Any]) -> Any:
    """The Axes of the one figure drawn that holds the heatmap image (the colorbar's holds
    none)."""
    assert len(figures) == 1
    axes = [ax for ax in figures[0].axes if ax.images]
    assert len(axes) == 1 and len(axes[0].images) == 1
    return axes[0]


def labels(ticklabels: list[Any]) -> list[str]:
    return [t.get_text() for t in ticklabels]


def decoded(path: Path) -> np.ndarray:
    """The PNG's pixels, (height, width, RGBA) floats in 0..1."""
    import matplotlib.image

    return matplotlib.image.imread(str(path))


def pixel(png: np.ndarray, ax: Any, col: float, row: float) -> np.ndarray:
    """The RGB of the PNG at data point (col, row) of ``ax`` (figure pixels are the PNG's:
    the figure is saved at its own dpi, without a tight bounding box)."""
    x, y = ax.transData.transform((col, row))
    return png[int(png.shape[0] - y), int(x), :3]


def expected_colour(value: float, matrix: np.ndarray) -> np.ndarray:
    """viridis over the adapter's own range of utilization, in percent (as documented)."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    finite = matrix[np.isfinite(matrix)] * 100
    norm = Normalize(vmin=float(finite.min()), vmax=float(finite.max()))
    return np.asarray(colormaps["viridis"](norm(value * 100))[:3])


GREY = np.array([0xE6, 0xE6, 0xE6]) / 255  # cells without a module


def test_valid_png_of_sensible_size(audit, tmp_path: Path, drawn: list[Any]) -> None:
    path = utilization_heatmap(audit, tmp_path / "gradience" / "utilization.png")
    assert path == tmp_path / "gradience" / "utilization.png"
    width, height = png_size(path.read_bytes())
    assert 600 <= width <= 1800 and 300 <= height <= 1600
    assert not list(path.parent.glob(".*tmp"))
    # the PNG decodes to the figure drawn, at its size and dpi, and is no blank canvas
    png = decoded(path)
    figure = drawn[0]
    w_in, h_in = figure.get_size_inches()
    assert png.shape == (height, width, 4)
    assert abs(width - w_in * figure.dpi) < 1 and abs(height - h_in * figure.dpi) < 1
    assert len(np.unique(png[..., :3].reshape(-1, 3), axis=0)) > 50


def test_cells_labels_and_colours_match_the_audit(audit, tmp_path: Path, drawn: list[Any]) -> None:
    """Every (module, layer) cell of the golden audit: its value in the image, its percentage
    written in it in a readable colour, and its colour in the PNG the colormap's for it; the
    axes name the modules, layers and groups."""
    path = utilization_heatmap(audit, tmp_path / "u.png")
    rows, _, columns, matrix = utilization_grid(audit["layers"])
    assert matrix.shape == (7, 6) and not np.isnan(matrix).any()
    ax = heatmap_axes(drawn)
    image = ax.images[0]
    np.testing.assert_allclose(np.ma.getdata(image.get_array()), matrix * 100, rtol=1e-12)
    assert not np.ma.getmaskarray(image.get_array()).any()
    assert image.cmap.name.startswith("viridis")
    assert (image.norm.vmin, image.norm.vmax) == pytest.approx(
        (matrix.min() * 100, matrix.max() * 100)
    )
    assert (
        labels(ax.get_yticklabels())
        == rows
        == [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
    )
    assert labels(ax.get_xticklabels()) == columns == ["0", "1", "2", "3", "4", "5"]
    assert ax.get_xlabel() == "layer"
    (side,) = ax.child_axes  # the group names on the right, centred on their rows
    assert labels(side.get_yticklabels()) == ["attention", "mlp"]
    assert list(side.get_yticks()) == [1.5, 5.0]
    assert image.colorbar.ax.get_ylabel() == "utilization (stable rank / r)"
    title = ax.get_title(loc="left")
    for part in ("allocated rank r=16", "mean utilization 12.4%", "42 modules"):
        assert part in title
    assert f"colours span {matrix.min() * 100:.1f}%–{matrix.max() * 100:.1f}%" in title
    assert "grey" not in title  # no empty cell

    written = {tuple(t.get_position()): t for t in ax.texts}
    assert len(written) == matrix.size
    png = decoded(path)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            value = matrix[i, j]
            text = written[(j, i)]
            assert text.get_text() == f"{value * 100:.0f}%"
            dark = image.norm(value * 100) < 0.6  # viridis is dark at its low end
            assert text.get_color() == ("white" if dark else "black")
            # off the centre, where the text is drawn
            got = pixel(png, ax, j - 0.3, i - 0.3)
            np.testing.assert_allclose(got, expected_colour(value, matrix), atol=2 / 255)
    # the extremes are the colormap's two ends
    lo, hi = (
        np.unravel_index(matrix.argmin(), matrix.shape),
        np.unravel_index(matrix.argmax(), matrix.shape),
    )
    from matplotlib import colormaps

    viridis = colormaps["viridis"]
    np.testing.assert_allclose(
        pixel(png, ax, lo[1] - 0.3, lo[0] - 0.3), viridis(0.0)[:3], atol=2 / 255
    )
    np.testing.assert_allclose(
        pixel(png, ax, hi[1] - 0.3, hi[0] - 0.3), viridis(1.0)[:3], atol=2 / 255
    )


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


def test_single_module(tmp_path: Path, drawn: list[Any]) -> None:
    audit = synthetic(1, {"self_attn.q_proj": "attention"})
    path = utilization_heatmap(audit, tmp_path / "one.png")
    width, height = png_size(path.read_bytes())
    assert width >= 600 and height >= 300
    ax = heatmap_axes(drawn)
    image = ax.images[0]
    assert np.ma.getdata(image.get_array()).tolist() == [[0.0]]  # utilization 0.0 -> 0%
    # one value: a band of 5 points around it, within 0..100
    assert (image.norm.vmin, image.norm.vmax) == (0.0, 5.0)
    assert labels(ax.get_yticklabels()) == ["q_proj"]
    assert labels(ax.get_xticklabels()) == ["0"]
    assert not ax.child_axes  # one group: no group names
    assert [(t.get_text(), t.get_color()) for t in ax.texts] == [("0%", "white")]
    assert "· 1 module ·" in ax.get_title(loc="left")
    from matplotlib import colormaps

    got = pixel(decoded(path), ax, -0.3, -0.3)
    np.testing.assert_allclose(got, colormaps["viridis"](0.0)[:3], atol=2 / 255)


def test_modules_without_layer_index(tmp_path: Path, drawn: list[Any]) -> None:
    audit = synthetic(1, {"fc1": "mlp", "fc2": "mlp", "head.proj": "other"}, indexed=False)
    rows, groups, columns, matrix = utilization_grid(audit["layers"])
    assert (rows, groups, columns) == (["fc1", "fc2", "head.proj"], ["mlp", "mlp", "other"], ["–"])
    assert matrix.tolist() == [[0.0], [0.13], [0.26]]
    path = utilization_heatmap(audit, tmp_path / "flat.png")
    assert png_size(path.read_bytes())[0] >= 600
    ax = heatmap_axes(drawn)
    assert labels(ax.get_yticklabels()) == ["fc1", "fc2", "head.proj"]
    assert list(ax.get_xticks()) == []  # one "–" column: no layer ticks
    assert ax.get_xlabel() == "modules without a layer index"
    assert labels(ax.child_axes[0].get_yticklabels()) == ["mlp", "other"]
    assert [t.get_text() for t in ax.texts] == ["0%", "13%", "26%"]
    png = decoded(path)
    for i, value in enumerate(matrix[:, 0]):
        got = pixel(png, ax, -0.3, i - 0.3)
        np.testing.assert_allclose(got, expected_colour(value, matrix), atol=2 / 255)


def test_eighty_layers_stay_readable(tmp_path: Path, drawn: list[Any]) -> None:
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
    path = utilization_heatmap(audit, tmp_path / "big.png")
    width, height = png_size(path.read_bytes())
    assert width <= 1800 and height <= 1600
    rows, _, columns, matrix = utilization_grid(audit["layers"])
    assert matrix.shape == (8, 81) and columns[-1] == "–"
    ax = heatmap_axes(drawn)
    assert np.ma.getmaskarray(ax.images[0].get_array()).tolist() == np.isnan(matrix).tolist()
    # readable: every 5th layer is labelled (at most 32 labels), every module row is, and the
    # 648 cells carry no numbers
    assert labels(ax.get_xticklabels()) == [str(i) for i in range(0, 80, 5)] + ["–"]
    assert list(ax.get_xticks()) == [*range(0, 80, 5), 80]
    assert labels(ax.get_yticklabels()) == rows
    assert rows == [*(name.split(".")[-1] for name in modules), "lm_head"]
    assert labels(ax.child_axes[0].get_yticklabels()) == ["attention", "mlp", "other"]
    assert len(ax.texts) == 0
    assert "grey: no LoRA module there" in ax.get_title(loc="left")
    # every cell's colour, at its centre: the module's colour, or grey where there is none
    png = decoded(path)
    cells = [(i, j) for i in range(matrix.shape[0]) for j in range(matrix.shape[1])]
    got = np.array([pixel(png, ax, j, i) for i, j in cells])
    want = np.array(
        [GREY if np.isnan(matrix[c]) else expected_colour(matrix[c], matrix) for c in cells]
    )
    np.testing.assert_allclose(got, want, atol=2 / 255)


def test_missing_values_and_odd_rows(tmp_path: Path, drawn: list[Any]) -> None:
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
    path = utilization_heatmap(audit, tmp_path / "odd.png")
    assert png_size(path.read_bytes())[0] >= 600
    ax = heatmap_axes(drawn)
    assert np.ma.getmaskarray(ax.images[0].get_array()).tolist() == [
        [True, False, False],
        [True, False, False],
    ]
    # empty cells get no number, and are grey; an empty summary adds no rank or mean
    assert sorted((t.get_position(), t.get_text()) for t in ax.texts) == [
        ((1, 0), "7%"),
        ((1, 1), "20%"),
        ((2, 0), "14%"),
        ((2, 1), "27%"),
    ]
    title = ax.get_title(loc="left")
    assert "grey: no LoRA module there" in title and "\n6 modules ·" in title
    assert "allocated rank" not in title and "mean utilization" not in title
    png = decoded(path)
    for i in range(2):
        np.testing.assert_allclose(pixel(png, ax, -0.3, i - 0.3), GREY, atol=2 / 255)
        for j in (1, 2):
            want = expected_colour(matrix[i, j], matrix)
            np.testing.assert_allclose(pixel(png, ax, j - 0.3, i - 0.3), want, atol=2 / 255)


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
