"""The utilization heatmap on large audits: row labels and the whole picture.

Row labels used to compare every module with every other (O(K^2)): 5,000 modules took 43 s.
They are now one counter pass per suffix length (O(K * depth)). This script times the labels
alone and the whole PNG for K modules, and for a grid wider than 3,200 layer columns (which
used to raise StopIteration choosing the tick step).

    python benchmarks/heatmap_speed.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gradience_hub.publish.plot import _labels, _row_key, utilization_heatmap  # noqa: E402


def layers(k: int, depth: int = 3) -> list[dict]:
    """K modules, without a shared layer index (the case that made every key distinct)."""
    return [
        {
            "name": f"model.block{i % 97}.{'sub.' * (i % depth)}mod{i}.proj",
            "layer_index": None,
            "module_type": "other",
            "utilization": (i % 100) / 100,
        }
        for i in range(k)
    ]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for k in (1_000, 5_000, 20_000):
            rows = layers(k)
            keys = list(dict.fromkeys(_row_key(r["name"], None) for r in rows))
            start = time.perf_counter()
            _labels(keys)
            labels = time.perf_counter() - start
            start = time.perf_counter()
            utilization_heatmap({"layers": rows, "summary": {}}, Path(tmp) / f"k{k}.png")
            whole = time.perf_counter() - start
            print(f"{k:>6} modules: labels {labels:6.3f} s, whole PNG {whole:6.2f} s")
        wide = [
            {
                "name": f"model.layers.{i}.q_proj",
                "layer_index": i,
                "module_type": "attention",
                "utilization": 0.5,
            }
            for i in range(4_000)
        ]
        start = time.perf_counter()
        utilization_heatmap({"layers": wide, "summary": {}}, Path(tmp) / "wide.png")
        print(f"4,000 layer columns: whole PNG {time.perf_counter() - start:6.2f} s")


if __name__ == "__main__":
    main()
