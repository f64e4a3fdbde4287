"""UDR on a Mistral-7B-shaped base: ours (targeted tensors by byte range, sigma_max by block
Krylov) against gradience 0.11's way (load the whole base with transformers, then a dense SVD
per target), side by side. Figures, not a pass/fail test.

The base has Mistral-7B's tensors and shapes (32 layers; q,o 4096x4096, k,v 1024x4096 (GQA),
gate/up 14336x4096, down 4096x14336, embeddings and lm_head 32000x4096; bf16, 3 shards, 14.5
GB as listed). To fit this machine's disk and time the shards are written sparse: q,k,v,o hold
random weights (a Gaussian bulk plus a few strong directions, as trained weights have), the MLP
and embedding bytes are holes (read back as zeros, taking no disk). Ours reads only q,k,v,o.

gradience's way cannot run here in full (a float32 7B model needs 29 GB of RAM, this machine
has less), so it is measured on the same base cut to 1 and 2 layers (embeddings and lm_head
included) and projected linearly to 32 layers, plus a float64 dense SVD of one q and one k
module projected to 128 modules; the projection is labelled as such.

    python benchmarks/udr_speed.py [--dir DIR] [--layers 32] [--skip-transformers]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HIDDEN, KV, MLP, VOCAB, R = 4096, 1024, 14336, 32000, 16
ATTN = {
    "q_proj": (HIDDEN, HIDDEN),
    "k_proj": (KV, HIDDEN),
    "v_proj": (KV, HIDDEN),
    "o_proj": (HIDDEN, HIDDEN),
}
MLPS = {"gate_proj": (MLP, HIDDEN), "up_proj": (MLP, HIDDEN), "down_proj": (HIDDEN, MLP)}


def _tensors(layers: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (VOCAB, HIDDEN)}
    for i in range(layers):
        for p, s in ATTN.items():
            shapes[f"model.layers.{i}.self_attn.{p}.weight"] = s
        for p, s in MLPS.items():
            shapes[f"model.layers.{i}.mlp.{p}.weight"] = s
        shapes[f"model.layers.{i}.input_layernorm.weight"] = (HIDDEN,)
        shapes[f"model.layers.{i}.post_attention_layernorm.weight"] = (HIDDEN,)
    shapes["model.norm.weight"] = (HIDDEN,)
    shapes["lm_head.weight"] = (VOCAB, HIDDEN)
    return shapes


def _weight(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """bf16 bits of 0.02 * Gaussian + 8 strong directions (singular values 2..0.5)."""
    m, n = shape
    W = rng.standard_normal(shape, dtype=np.float32) * 0.02
    U = rng.standard_normal((m, 8), dtype=np.float32) / np.sqrt(m)
    V = rng.standard_normal((8, n), dtype=np.float32) / np.sqrt(n)
    W += (U * np.linspace(2.0, 0.5, 8, dtype=np.float32)) @ V
    return (W.view(np.uint32) >> 16).astype(np.uint16)  # truncation to bf16: fine for a bench


def write_base(directory: Path, layers: int, seed: int = 0) -> Path:
    """Sparse bf16 safetensors shards (3 for 32 layers) + index + a MistralConfig."""
    if (directory / "model.safetensors.index.json").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shapes = _tensors(layers)
    names = list(shapes)
    n_shards = 3 if layers >= 3 else 1
    per = -(-len(names) // n_shards)
    weight_map = {}
    for s in range(n_shards):
        keys = names[s * per : (s + 1) * per]
        shard = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        header, offset = {}, 0
        for k in keys:
            size = int(np.prod(shapes[k])) * 2
            header[k] = {
                "dtype": "BF16",
                "shape": list(shapes[k]),
                "data_offsets": [offset, offset + size],
            }
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(directory / shard, "wb") as f:
            f.write(len(raw).to_bytes(8, "little") + raw)
            start = 8 + len(raw)
            for k in keys:
                if ".self_attn." in k:
                    f.seek(start + header[k]["data_offsets"][0])
                    f.write(_weight(shapes[k], rng).tobytes())
            f.truncate(start + offset)  # the rest stays a hole: zeros, no disk
        weight_map.update(dict.fromkeys(keys, shard))
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    config = {
        "architectures": ["MistralForCausalLM"],
        "model_type": "mistral",
        "hidden_size": HIDDEN,
        "intermediate_size": MLP,
        "num_hidden_layers": layers,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": VOCAB,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def write_adapter(directory: Path, layers: int, seed: int = 1) -> Path:
    from safetensors.numpy import save_file

    if (directory / "adapter_config.json").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tensors = {}
    for i in range(layers):
        for p, (d_out, d_in) in ATTN.items():
            name = f"base_model.model.model.layers.{i}.self_attn.{p}"
            tensors[f"{name}.lora_A.weight"] = rng.standard_normal((R, d_in), dtype=np.float32) / 64
            tensors[f"{name}.lora_B.weight"] = (
                rng.standard_normal((d_out, R), dtype=np.float32) / 64
            )
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "r": R,
        "lora_alpha": 32,
        "target_modules": list(ATTN),
        "base_model_name_or_path": "mistralai/Mistral-7B-v0.1",
        "task_type": "CAUSAL_LM",
    }
    (directory / "adapter_config.json").write_text(json.dumps(config))
    return directory


def ours(adapter: Path, base: Path, cache: Path) -> dict[str, float]:
    from gradience_hub.audit import run_audit
    from gradience_hub.audit.udr import compute_udr

    layers = run_audit(str(adapter)).layers
    cache.unlink(missing_ok=True)
    t = time.perf_counter()
    report = compute_udr(layers, str(base), cache=cache)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    again = compute_udr(layers, str(base), cache=cache)
    warm = time.perf_counter() - t
    worst = max(r.base_sigma_max_error / r.base_sigma_max for r in report.rows)
    return {
        "modules": len(report.rows),
        "seconds": cold,
        "bytes_read": report.bytes_read,
        "base_bytes": report.base_bytes,
        "cached_seconds": warm,
        "cached_bytes_read": again.bytes_read,
        "worst_bound": worst,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "udr_median": float(report.summary.get("udr_median", 0.0)),
    }


_LOAD = """
import sys, time, resource, torch
from transformers import AutoModelForCausalLM
t = time.perf_counter()
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32, device_map="cpu")
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def transformers_load(base: Path) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", _LOAD, str(base)], capture_output=True, text=True, check=True
    )
    seconds, rss = out.stdout.split()
    return float(seconds), float(rss)


def dense_svd_seconds() -> dict[str, float]:
    rng = np.random.default_rng(0)
    out = {}
    for p in ("q_proj", "k_proj"):
        W = rng.standard_normal(ATTN[p]).astype(np.float64)
        t = time.perf_counter()
        np.linalg.svd(W, compute_uv=False)
        out[p] = time.perf_counter() - t
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "gh-udr-bench")
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--skip-transformers", action="store_true")
    args = parser.parse_args()
    base = write_base(args.dir / f"base-{args.layers}", args.layers)
    adapter = write_adapter(args.dir / f"adapter-{args.layers}", args.layers)
    listed = sum(p.stat().st_size for p in base.glob("*.safetensors"))
    print(
        f"base: Mistral-7B-shaped, {args.layers} layers, {listed / 1e9:.2f} GB of shards "
        "as listed; "
        f"adapter: q,k,v,o r={R}; {os.cpu_count()} cores (shared, loaded)"
    )
    o = ours(adapter, base, args.dir / "norms.json")
    print(
        f"ours: {o['modules']} modules in {o['seconds']:.1f} s, "
        f"read {o['bytes_read'] / 1e9:.3f} GB "
        f"of {o['base_bytes'] / 1e9:.2f} GB ({o['bytes_read'] / o['base_bytes']:.1%}); "
        f"peak RSS {o['peak_rss_mb']:.0f} MB; "
        f"worst sigma_max bound {o['worst_bound']:.1e} (relative)"
    )
    print(
        f"ours, second adapter (norms cache): {o['cached_seconds']:.2f} s, "
        f"{o['cached_bytes_read']} bytes read (the shard headers; no weight)"
    )
    if args.skip_transformers:
        return
    t1, rss1 = transformers_load(write_base(args.dir / "base-1", 1))
    t2, rss2 = transformers_load(write_base(args.dir / "base-2", 2))
    per_layer = max(t2 - t1, 0.0)
    projected = t1 + per_layer * (args.layers - 1)
    rss_projected = rss1 + max(rss2 - rss1, 0.0) * (args.layers - 1)
    svd = dense_svd_seconds()
    svd_all = args.layers * 2 * (svd["q_proj"] + svd["k_proj"])
    print(
        f"transformers load (float32), measured: 1 layer {t1:.1f} s / {rss1:.0f} MB RSS, 2 layers "
        f"{t2:.1f} s / {rss2:.0f} MB; projected to {args.layers}: {projected:.0f} s, "
        f"{rss_projected / 1024:.1f} GB RSS, reads all {listed / 1e9:.1f} GB"
    )
    print(
        f"dense float64 SVD: q {svd['q_proj']:.1f} s, k {svd['k_proj']:.1f} s; projected to "
        f"{o['modules']} modules: {svd_all:.0f} s"
    )
    print(
        f"gradience's way, projected: {projected + svd_all:.0f} s vs ours {o['seconds']:.0f} s "
        f"({(projected + svd_all) / o['seconds']:.0f}x)"
    )


if __name__ == "__main__":
    main()
