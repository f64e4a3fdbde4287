"""Every peer in one benchmark: ours against gradience 0.11, peft's LoRA-to-LoRA conversion and
kohya-ss sd-scripts' ``networks/resize_lora.py``, as whole processes on the same inputs (figures,
not a pass/fail test).

Inputs (written once under ``--work``; ``--quick`` writes small ones of the same layouts):

- **mistral**: a Mistral-7B-shaped PEFT adapter, 32 layers x q,k,v,o = 128 modules of 4096 x 4096,
  r=64, bf16 (the adapter of benchmarks/audit_speed.py).
- **llama**: an all-linear r=64 bf16 PEFT adapter of a 1024-wide 8-layer Llama (intermediate 2816,
  vocab 1024) built from a ``transformers`` config: 56 modules. The base model is saved beside it,
  since peft's conversion needs the model.
- **sdxl**: an SDXL-shaped kohya-ss file, 700 modules of the UNet's transformer blocks, r=32, fp16
  (the module list of benchmarks/sdxl_lora_speed.py).
- **flux**: a Flux-shaped kohya-ss file, 228 modules (19 double blocks x img/txt attn qkv, attn
  proj, mlp 0, mlp 2; 38 single blocks x linear1, linear2), 3072 wide, r=32, bf16.

Runs (each a fresh process; wall time is ``time.perf_counter`` around ``subprocess.run``, peak RSS
from GNU ``/usr/bin/time -v``, or a psutil poller where that binary is missing):

- ours: ``gradience-hub audit SRC --json`` (mistral), ``gradience-hub compress SRC -o OUT
  --rank 16`` and ``--energy 0.9`` (mistral, llama), ``--rank 16`` and ``--energy 0.81`` (sdxl,
  flux);
- gradience 0.11: ``gradience audit --peft-dir SRC --json`` and ``gradience truncate --peft-dir SRC
  --out-dir OUT --rank 16 --dtype bf16`` (mistral; truncate on llama too). Installed from PyPI into
  ``WORK/g011-venv`` as benchmarks/compress_speed.py does, unless ``--gradience-python`` is given;
- peft: ``PeftModel.from_pretrained`` on the saved base, then ``peft.save_as_lora(OUT, model,
  rank=16)`` and ``rank=0.9`` (llama), run as ``python compare.py _peft-convert ...`` with this
  interpreter (peft 0.21's ``peft.tuners.lora.conversion``);
- kohya: ``python networks/resize_lora.py --model SRC --save_to OUT --new_rank 16
  --save_precision fp16|bf16`` and ``--new_rank 32 --dynamic_method sv_fro --dynamic_param 0.9``
  (32 = the input rank, so the cap changes nothing) on sdxl and flux, from ``--sd-scripts DIR`` with
  ``--kohya-python PY``; the same from ``--sd-scripts-randomized DIR`` (PR 2240, which switches to
  ``torch.svd_lowrank`` when both sides of a module exceed 2048). ``sv_fro 0.9`` keeps the smallest
  k retaining 0.9**2 = 0.81 of the energy plus one (``index_sv_fro`` returns k, ``rank_resize`` adds
  1), so it is set against our ``--energy 0.81``; the table's notes check that rank relation on
  the written files, module by module.

kohya merges every module into a dense matrix and runs a full ``torch.linalg.svd`` on it (minutes
for the SDXL file on 2 cores, hours for Flux, whose 21504 x 3072 modules get a full 21504 x 21504
U). ``--kohya-fraction 0.1`` runs it on a file holding a tenth of the modules (every 10th of each
shape in key order, so the shapes keep their proportions; ``--kohya-flux-fraction`` sets the Flux
file's apart, 0.02 = one module per shape) and reports the measured time and a projection to the
whole file, labelled as such: ``startup + (measured - startup) x modules / modules run``, with
``startup`` the time of ``resize_lora.py --help`` (which imports all of ``library``).

For every compression output the written update of every module, ``s' B' A'``, is compared with
the original ``s B A``: relative Frobenius error ``||dW - dW'|| / ||dW||`` against the Eckart-Young
optimum at the written rank, ``sqrt(sum_{i>k} s_i^2) / ||dW||``. The optimum is computed from the
original factors: a dense float64 SVD per module for llama, the factored route elsewhere (QR of B
and A^T, SVD of the r x r core); the error of the written update by QRs of the stacked factors
(exact, never the dense product). The table shows the max and median excess (error minus optimum,
in units of ``||dW||``); it includes the rounding of the written dtype (bf16/fp16 ~ 1e-3).

Setting up the peers (x86_64; the kohya venv is large, CUDA wheels of torch come along):

    # sd-scripts: a checkout of github.com/kohya-ss/sd-scripts (main), and of PR 2240's head
    # (refs/pull/2240/head) for --sd-scripts-randomized, e.g. with git archive into /work/peers/
    python3 -m venv /work/peers/kohya-venv
    /work/peers/kohya-venv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /work/peers/kohya-venv/bin/pip install safetensors numpy tqdm diffusers==0.32.1 \\
        transformers==4.54.1 accelerate==1.6.0 huggingface-hub==0.34.3 \\
        opencv-python-headless imagesize toml pillow einops sentencepiece ftfy voluptuous
    # gradience 0.11: left to this script (WORK/g011-venv), or --gradience-python PY

Running it:

    .venv/bin/python benchmarks/compare.py --quick    # smoke run (minutes with kohya: its imports)
    .venv/bin/python benchmarks/compare.py --repeat 3 \\
        --sd-scripts /work/peers/sd-scripts --kohya-python /work/peers/kohya-venv/bin/python \\
        --sd-scripts-randomized /work/peers/sd-scripts-randomized \\
        --kohya-fraction 0.1 --kohya-flux-fraction 0.02
    # --only ours,gradience,peft,kohya  --inputs mistral,llama,sdxl,flux  --threads 1
    # --json-out results.json

A peer that is not installed or not given is reported as "skipped (why)", never as a number.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
TOOLS = ("ours", "gradience", "peft", "kohya")
INPUTS = ("mistral", "llama", "sdxl", "flux")
RANK = 16

# --------------------------------------------------------------------------- safetensors, raw

_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}


class SafeFile:
    """A safetensors file read without a framework (any float dtype, bf16 through ml_dtypes)."""

    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        self.offset = 8 + n
        self.metadata = header.pop("__metadata__", None) or {}
        self.entries: dict[str, dict[str, Any]] = header

    def keys(self) -> list[str]:
        return list(self.entries)

    def __iter__(self):
        return iter(self.entries)

    def get(self, key: str):
        import ml_dtypes
        import numpy as np

        e = self.entries[key]
        start, end = e["data_offsets"]
        name = _DTYPES[e["dtype"]]
        dtype = np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)
        with open(self.path, "rb") as f:
            f.seek(self.offset + start)
            buf = f.read(end - start)
        return np.frombuffer(buf, dtype=dtype).reshape(e["shape"]).astype(np.float64)

    def dtype(self, key: str) -> str:
        return self.entries[key]["dtype"].lower()

    def subset(self, keys: list[str], dest: Path) -> None:
        """Write the entries ``keys`` (bytes copied as stored) and the metadata to ``dest``."""
        header: dict[str, Any] = {"__metadata__": self.metadata} if self.metadata else {}
        chunks, pos = [], 0
        with open(self.path, "rb") as f:
            for key in keys:
                e = self.entries[key]
                start, end = e["data_offsets"]
                f.seek(self.offset + start)
                chunks.append(f.read(end - start))
                header[key] = {**e, "data_offsets": [pos, pos + end - start]}
                pos += end - start
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(dest, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            for chunk in chunks:
                f.write(chunk)


# --------------------------------------------------------------------------- inputs


@dataclass
class Input:
    name: str
    path: Path  # a PEFT directory or a kohya .safetensors file
    kind: str  # "peft" | "kohya"
    desc: str
    dtype: str
    dense: bool = False  # compute the optimum with a dense float64 SVD per module
    base: Path | None = None  # the saved base model (llama)


def _rng_factors(rng, d_out: int, d_in: int, r: int, decay_to: float, b_scale: float):
    import numpy as np

    decay = np.geomspace(1.0, decay_to, r)
    A = rng.standard_normal((r, d_in)) / np.sqrt(d_in)
    B = rng.standard_normal((d_out, r)) * decay * b_scale
    return B, A


def write_peft_attention(directory: Path, layers: int, d: int, r: int) -> Path:
    """The Mistral-shaped adapter of audit_speed.py (same generator), any size."""
    import ml_dtypes
    import numpy as np
    from safetensors.numpy import save_file

    if (directory / "adapter_model.safetensors").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    decay = np.geomspace(1.0, 1e-3, r).astype(np.float32)
    tensors = {}
    projs = ("q_proj", "k_proj", "v_proj", "o_proj")
    for i in range(layers):
        for proj in projs:
            name = f"base_model.model.model.layers.{i}.self_attn.{proj}"
            A = rng.standard_normal((r, d), dtype=np.float32) / np.sqrt(d)
            B = rng.standard_normal((d, r), dtype=np.float32) * decay * 0.01
            tensors[f"{name}.lora_A.weight"] = A.astype(ml_dtypes.bfloat16)
            tensors[f"{name}.lora_B.weight"] = B.astype(ml_dtypes.bfloat16)
    save_file(tensors, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA",
        "r": r,
        "lora_alpha": 16,
        "target_modules": list(projs),
        "base_model_name_or_path": "mistralai/Mistral-7B-v0.1",
        "task_type": "CAUSAL_LM",
    }
    (directory / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return directory


def write_llama(directory: Path, hidden: int, layers: int, inter: int, r: int) -> None:
    """A random Llama from a config (saved, bf16) and an all-linear r-``r`` bf16 adapter on it."""
    if (directory / "adapter" / "adapter_model.safetensors").exists():
        return
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        vocab_size=1024,
        max_position_embeddings=512,
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(directory / "base")
    lora = LoraConfig(r=r, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    decay = torch.logspace(0, -3, r)
    with torch.no_grad():
        for module in peft_model.modules():
            if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
                A = module.lora_A["default"].weight
                B = module.lora_B["default"].weight
                A.data = (torch.randn(A.shape) / A.shape[1] ** 0.5).to(torch.bfloat16)
                B.data = (torch.randn(B.shape) * decay * 0.01).to(torch.bfloat16)
    peft_model.save_pretrained(directory / "adapter")


def flux_modules(double: int = 19, single: int = 38, c: int = 3072) -> dict[str, tuple[int, int]]:
    """kohya module name -> (d_out, d_in) for Flux.1's double and single blocks (no modulation)."""
    out: dict[str, tuple[int, int]] = {}
    for i in range(double):
        for stream in ("img", "txt"):
            base = f"lora_unet_double_blocks_{i}_{stream}"
            out[f"{base}_attn_qkv"] = (3 * c, c)
            out[f"{base}_attn_proj"] = (c, c)
            out[f"{base}_mlp_0"] = (4 * c, c)
            out[f"{base}_mlp_2"] = (c, 4 * c)
    for i in range(single):
        out[f"lora_unet_single_blocks_{i}_linear1"] = (7 * c, c)
        out[f"lora_unet_single_blocks_{i}_linear2"] = (c, 5 * c)
    return out


def write_kohya(path: Path, modules: dict[str, tuple[int, int]], r: int, dtype: str) -> Path:
    """A kohya-ss LoRA file: lora_down/lora_up/alpha per module, ``ss_network_*`` metadata."""
    import ml_dtypes
    import numpy as np
    from safetensors.numpy import save_file

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    np_dtype = ml_dtypes.bfloat16 if dtype == "bf16" else np.float16
    rng = np.random.default_rng(0)
    tensors = {}
    for name, (d_out, d_in) in modules.items():
        B, A = _rng_factors(rng, d_out, d_in, r, 1e-2, 0.05)
        tensors[f"{name}.lora_down.weight"] = A.astype(np_dtype)
        tensors[f"{name}.lora_up.weight"] = B.astype(np_dtype)
        tensors[f"{name}.alpha"] = np.array(16.0, dtype=np_dtype)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"ss_network_dim": str(r), "ss_network_alpha": "16"})
    tmp.rename(path)
    return path


def kohya_subset(src: Path, fraction: float) -> tuple[Path, int, int]:
    """A file with a ``fraction`` of ``src``'s modules, every ``1/fraction``-th of each shape (key
    order), so the shapes keep their proportions; (path, modules kept, modules in ``src``)."""
    f = SafeFile(src)
    groups: dict[tuple, list[str]] = {}
    for key in sorted(f.keys()):
        if key.endswith(".lora_down.weight"):
            name = key[: -len(".lora_down.weight")]
            shape = (*f.entries[key]["shape"], *f.entries[f"{name}.lora_up.weight"]["shape"])
            groups.setdefault(shape, []).append(name)
    step = max(1, round(1 / fraction))
    kept = {n for names in groups.values() for n in names[::step]}
    total = sum(len(names) for names in groups.values())
    dest = src.with_name(f"{src.stem}.every{step}.safetensors")
    if not dest.exists():
        f.subset([k for k in f if k.split(".")[0] in kept], dest)
    return dest, len(kept), total


def prepare_inputs(work: Path, quick: bool, want: set[str]) -> tuple[dict[str, Input], list[str]]:
    sys.path.insert(0, str(HERE))
    from sdxl_lora_speed import sdxl_modules

    inputs: dict[str, Input] = {}
    notes: list[str] = []
    if "mistral" in want:
        layers, d = (4, 1024) if quick else (32, 4096)
        path = write_peft_attention(work / f"mistral-{layers}x{d}", layers, d, 64)
        n = 4 * layers
        inputs["mistral"] = Input(
            "mistral", path, "peft", f"Mistral-7B-shaped PEFT, {n} modules {d}x{d} r=64", "bf16"
        )
    if "llama" in want:
        hidden, layers, inter = (256, 2, 704) if quick else (1024, 8, 2816)
        directory = work / f"llama-{hidden}x{layers}"
        try:
            write_llama(directory, hidden, layers, inter, 64)
            inputs["llama"] = Input(
                "llama",
                directory / "adapter",
                "peft",
                f"Llama {hidden}-wide {layers} layers, all-linear PEFT, {7 * layers} modules r=64",
                "bf16",
                dense=True,
                base=directory / "base",
            )
        except ImportError as exc:
            notes.append(
                f"llama input: skipped (building it needs torch, transformers, peft: {exc})"
            )
    if "sdxl" in want:
        shapes = sdxl_modules()
        if quick:
            shapes = {n: (o // 4, i // 4) for n, (o, i) in list(shapes.items())[::35]}
        path = write_kohya(work / f"sdxl-{len(shapes)}.safetensors", shapes, 32, "fp16")
        inputs["sdxl"] = Input(
            "sdxl", path, "kohya", f"SDXL-shaped kohya, {len(shapes)} modules r=32", "fp16"
        )
    if "flux" in want:
        shapes = flux_modules(1, 2, 768) if quick else flux_modules()
        c = 768 if quick else 3072
        path = write_kohya(work / f"flux-{len(shapes)}.safetensors", shapes, 32, "bf16")
        inputs["flux"] = Input(
            "flux", path, "kohya", f"Flux-shaped kohya, {len(shapes)} modules {c}-wide r=32", "bf16"
        )
    return inputs, notes


# --------------------------------------------------------------------------- reading adapters


@dataclass
class Module:
    B: Any  # float64 (d_out, r)
    A: Any  # float64 (r, d_in)
    scale: float
    dtype: str


def _peft_scale(config: dict[str, Any], name: str, r: int) -> float:
    """peft's scaling for module ``name`` (rank_pattern/alpha_pattern matched as peft does)."""

    def pattern(patterns: dict[str, Any], default: Any) -> Any:
        key = name.removeprefix("base_model.model.")
        for p in patterns or {}:
            if re.match(rf"(.*\.)?({p})$", key):
                return patterns[p]
        return default

    alpha = float(pattern(config.get("alpha_pattern", {}), config.get("lora_alpha", 8)))
    if config.get("use_rslora"):
        return alpha / r**0.5
    return alpha / r


def read_modules(path: Path) -> dict[str, Module]:
    """module name -> its factors and scale, for a PEFT directory or a kohya file (or a folder
    holding one)."""
    if path.is_dir() and (path / "adapter_config.json").exists():
        config = json.loads((path / "adapter_config.json").read_text())
        f = SafeFile(path / "adapter_model.safetensors")
        out = {}
        for key in f:
            if key.endswith(".lora_A.weight"):
                name = key[: -len(".lora_A.weight")]
                A = f.get(key)
                B = f.get(f"{name}.lora_B.weight")
                out[name] = Module(B, A, _peft_scale(config, name, A.shape[0]), f.dtype(key))
        return out
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if len(files) != 1:
            raise FileNotFoundError(f"{path}: expected one .safetensors file, found {len(files)}")
        path = files[0]
    f = SafeFile(path)
    keys = set(f.keys())
    out = {}
    for key in f:
        if key.endswith(".lora_down.weight"):
            name = key[: -len(".lora_down.weight")]
            A = f.get(key)
            B = f.get(f"{name}.lora_up.weight")
            alpha = float(f.get(f"{name}.alpha")) if f"{name}.alpha" in keys else A.shape[0]
            out[name] = Module(B, A, alpha / A.shape[0], f.dtype(key))
    return out


# --------------------------------------------------------------------------- error vs optimum


@dataclass
class Reference:
    """Per original module: singular values of dW (descending) and ||dW||_F."""

    S: dict[str, Any] = field(default_factory=dict)
    norm: dict[str, float] = field(default_factory=dict)


def reference(inp: Input) -> Reference:
    import numpy as np

    ref = Reference()
    for name, m in read_modules(inp.path).items():
        if inp.dense:
            S = np.linalg.svd(m.scale * m.B @ m.A, compute_uv=False)
        else:
            _, Rb = np.linalg.qr(m.B)
            _, Ra = np.linalg.qr(m.A.T)
            S = np.linalg.svd(m.scale * Rb @ Ra.T, compute_uv=False)
        ref.S[name] = S
        ref.norm[name] = float(np.sqrt(np.sum(S**2)))
    return ref


def written_error(orig: Module, new: Module, dense: bool) -> float:
    """||s B A - s' B' A'||_F."""
    import numpy as np

    if dense:
        return float(np.linalg.norm(orig.scale * orig.B @ orig.A - new.scale * new.B @ new.A))
    left = np.hstack([orig.scale * orig.B, -new.scale * new.B])
    right = np.vstack([orig.A, new.A]).T
    _, R1 = np.linalg.qr(left)
    _, R2 = np.linalg.qr(right)
    return float(np.linalg.norm(R1 @ R2.T))


@dataclass
class Quality:
    ranks: dict[str, int]
    excess: list[float]  # per module: (err - optimum) / ||dW||
    optimum: list[float]  # per module: optimum / ||dW||
    dtype: str
    missing: list[str]


def quality(inp: Input, ref: Reference, out: Path, only: set[str] | None = None) -> Quality:
    import numpy as np

    original = read_modules(inp.path)
    written = read_modules(out)
    ranks, excess, optimum, missing, dtypes = {}, [], [], [], set()
    for name, orig in original.items():
        if only is not None and name not in only:
            continue
        norm = ref.norm[name]
        new = written.get(name)
        if new is None:
            missing.append(name)
            continue
        k = new.A.shape[0]
        ranks[name] = k
        dtypes.add(new.dtype)
        opt = float(np.sqrt(np.sum(ref.S[name][k:] ** 2))) / norm if norm else 0.0
        err = written_error(orig, new, inp.dense) / norm if norm else 0.0
        excess.append(err - opt)
        optimum.append(opt)
    return Quality(ranks, excess, optimum, "/".join(sorted(dtypes)), missing)


# --------------------------------------------------------------------------- running


def gnu_time() -> str | None:
    path = "/usr/bin/time"
    if not os.access(path, os.X_OK):
        return None
    probe = subprocess.run([path, "-v", "true"], capture_output=True, text=True)
    return path if "Maximum resident set size" in probe.stderr else None


@dataclass
class Measure:
    wall: float
    rss_mb: float
    rc: int
    tail: str


def measure(cmd: list[str], env: dict[str, str], cwd: Path | None, timer: str | None) -> Measure:
    """Wall time of the whole process and its peak RSS (GNU time -v, else a psutil poller)."""
    if timer:
        with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
            started = time.perf_counter()
            proc = subprocess.run(
                [timer, "-v", "-o", report.name, *cmd],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
                cwd=cwd,
            )
            wall = time.perf_counter() - started
            text = Path(report.name).read_text()
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
        rss = int(found.group(1)) / 1024 if found else float("nan")
        return Measure(wall, rss, proc.returncode, proc.stderr.decode(errors="replace")[-800:])
    import psutil

    peak = [0]
    stop = threading.Event()

    def poll(pid: int) -> None:
        try:
            root = psutil.Process(pid)
            while not stop.is_set():
                procs = [root, *root.children(recursive=True)]
                total = 0
                for p in procs:
                    with contextlib.suppress(psutil.Error):
                        total += p.memory_info().rss
                peak[0] = max(peak[0], total)
                stop.wait(0.01)
        except psutil.Error:
            pass

    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd
    )
    poller = threading.Thread(target=poll, args=(proc.pid,), daemon=True)
    poller.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - started
    stop.set()
    poller.join()
    return Measure(wall, peak[0] / 2**20, proc.returncode, err.decode(errors="replace")[-800:])


@dataclass
class Job:
    tool: str  # table label, e.g. "kohya (PR 2240)"
    family: str  # one of TOOLS
    input: str
    task: str
    cmd: list[str]
    out: Path | None = None  # the written adapter (compression runs)
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    baseline: str | None = None  # the task of ours it is set against
    fraction: tuple[int, int] | None = None  # (modules run, modules in the file)
    startup: list[str] | None = None  # a command timing the tool's fixed cost (projection)
    best: Measure | None = None
    rss: float = 0.0
    startup_s: float | None = None
    quality: Quality | None = None
    only_modules: set[str] | None = None


def peft_python_ok() -> str | None:
    probe = subprocess.run(
        [sys.executable, "-c", "import peft, transformers, torch; from peft import save_as_lora"],
        capture_output=True,
        text=True,
    )
    return None if probe.returncode == 0 else probe.stderr.strip().splitlines()[-1]


def gradience_cmd(args: argparse.Namespace) -> tuple[list[str] | None, str]:
    if args.gradience_python:
        python = Path(args.gradience_python)
        if not python.exists():
            return None, f"--gradience-python {python} does not exist"
    else:
        try:
            sys.path.insert(0, str(HERE))
            from compress_speed import g011_python

            python = g011_python(args.work)
        except (subprocess.CalledProcessError, OSError) as exc:
            return None, f"installing gradience==0.11.0 failed ({exc})"
    cmd = [str(python), "-m", "gradience.cli"]
    probe = subprocess.run([*cmd, "--help"], capture_output=True)
    if probe.returncode != 0:
        cmd = [str(python.parent / "gradience")]
        if not Path(cmd[0]).exists():
            return None, f"no gradience CLI in {python.parent}"
    version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('gradience'))"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return cmd, f"gradience {version}"


def kohya_check(sd_scripts: Path | None, python: Path | None, flag: str) -> str | None:
    """Why the kohya checkout at ``sd_scripts`` cannot run, or None."""
    if sd_scripts is None:
        return f"{flag} not given"
    if not (sd_scripts / "networks" / "resize_lora.py").exists():
        return f"{sd_scripts}/networks/resize_lora.py not found"
    if python is None:
        return "--kohya-python not given"
    probe = subprocess.run(
        [str(python), "networks/resize_lora.py", "--help"],
        cwd=sd_scripts,
        env={**os.environ, "PYTHONPATH": str(sd_scripts)},
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"resize_lora.py --help fails with {python}: {probe.stderr.strip()[-300:]}"
    return None


def build_jobs(
    args: argparse.Namespace, inputs: dict[str, Input], skipped: list[tuple[str, str, str, str]]
) -> list[Job]:
    only = set(args.only)
    jobs: list[Job] = []
    out_root = args.work / "out"
    hub = [sys.executable, "-m", "gradience_hub"]

    def out(*parts: str) -> Path:
        return out_root.joinpath(*parts)

    # ours
    if "ours" in only:
        if "mistral" in inputs:
            src = str(inputs["mistral"].path)
            jobs.append(Job("ours", "ours", "mistral", "audit", [*hub, "audit", src, "--json"]))
        for name in ("mistral", "llama"):
            if name in inputs:
                src = str(inputs[name].path)
                for task, flag in (
                    (f"rank {RANK}", ["--rank", str(RANK)]),
                    ("energy 0.9", ["--energy", "0.9"]),
                ):
                    o = out("ours", name, task.replace(" ", "-"))
                    jobs.append(
                        Job(
                            "ours",
                            "ours",
                            name,
                            task,
                            [*hub, "compress", src, "-o", str(o), *flag],
                            o,
                        )
                    )
        for name in ("sdxl", "flux"):
            if name in inputs:
                src = str(inputs[name].path)
                for task, flag in (
                    (f"rank {RANK}", ["--rank", str(RANK)]),
                    ("energy 0.81", ["--energy", "0.81"]),
                ):
                    o = out("ours", name, task.replace(" ", "-"))
                    jobs.append(
                        Job(
                            "ours",
                            "ours",
                            name,
                            task,
                            [*hub, "compress", src, "-o", str(o), *flag],
                            o,
                        )
                    )

    # gradience 0.11
    if "gradience" in only and ("mistral" in inputs or "llama" in inputs):
        cmd, why = gradience_cmd(args)
        if cmd is None:
            for name in ("mistral", "llama"):
                skipped.append(("gradience 0.11", name, "audit / truncate", f"skipped ({why})"))
        else:
            label = why
            if "mistral" in inputs:
                src = str(inputs["mistral"].path)
                jobs.append(
                    Job(
                        label,
                        "gradience",
                        "mistral",
                        "audit",
                        [*cmd, "audit", "--peft-dir", src, "--json"],
                        baseline="audit",
                    )
                )
            for name in ("mistral", "llama"):
                if name in inputs:
                    o = out("gradience", name)
                    tr = [
                        *cmd,
                        "truncate",
                        "--peft-dir",
                        str(inputs[name].path),
                        "--out-dir",
                        str(o),
                    ]
                    jobs.append(
                        Job(
                            label,
                            "gradience",
                            name,
                            f"rank {RANK}",
                            [*tr, "--rank", str(RANK), "--dtype", "bf16"],
                            o,
                            baseline=f"rank {RANK}",
                        )
                    )

    # peft
    if "peft" in only:
        why = None if "llama" in inputs else "the llama input could not be built"
        why = why or peft_python_ok()
        if why:
            skipped.append(("peft", "llama", f"rank {RANK} / energy 0.9", f"skipped ({why})"))
        else:
            import importlib.metadata

            label = f"peft {importlib.metadata.version('peft')}"
            inp = inputs["llama"]
            for task, rank in ((f"rank {RANK}", str(RANK)), ("energy 0.9", "0.9")):
                o = out("peft", task.replace(" ", "-"))
                cmd = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "_peft-convert",
                    str(inp.base),
                    str(inp.path),
                    str(o),
                    rank,
                ]
                jobs.append(Job(label, "peft", "llama", task, cmd, o, baseline=task))

    # kohya
    if "kohya" in only:
        checkouts = [("kohya sd-scripts", args.sd_scripts, "--sd-scripts")]
        checkouts.append(
            ("kohya PR 2240 (svd_lowrank)", args.sd_scripts_randomized, "--sd-scripts-randomized")
        )
        for label, checkout, flag in checkouts:
            why = kohya_check(checkout, args.kohya_python, flag)
            if why:
                for name in ("sdxl", "flux"):
                    if name in inputs:
                        skipped.append(
                            (label, name, f"rank {RANK} / sv_fro 0.9", f"skipped ({why})")
                        )
                continue
            assert checkout is not None
            env = {"PYTHONPATH": str(checkout)}
            script = [str(args.kohya_python), "networks/resize_lora.py"]
            tag = "pr2240" if "2240" in label else "main"
            for name in ("sdxl", "flux"):
                if name not in inputs:
                    continue
                inp = inputs[name]
                src, fraction, only_modules = inp.path, None, None
                share = args.kohya_fraction if name == "sdxl" else args.kohya_flux_fraction
                if share < 1:
                    src, kept, total = kohya_subset(inp.path, share)
                    fraction = (kept, total)
                    only_modules = set(read_modules_names(src))
                base = [*script, "--model", str(src), "--save_precision", inp.dtype]
                tasks = (
                    (f"rank {RANK}", ["--new_rank", str(RANK)], f"rank {RANK}"),
                    (
                        "sv_fro 0.9",
                        [
                            "--new_rank",
                            "32",
                            "--dynamic_method",
                            "sv_fro",
                            "--dynamic_param",
                            "0.9",
                        ],
                        "energy 0.81",
                    ),
                )
                for task, flags, baseline in tasks:
                    o = out(f"kohya-{tag}", name, task.replace(" ", "-"), "out.safetensors")
                    jobs.append(
                        Job(
                            label,
                            "kohya",
                            name,
                            task,
                            [*base, "--save_to", str(o), *flags],
                            o,
                            cwd=checkout,
                            env=env,
                            baseline=baseline,
                            fraction=fraction,
                            startup=[*script, "--help"] if fraction else None,
                            only_modules=only_modules,
                        )
                    )
    return jobs


def read_modules_names(path: Path) -> list[str]:
    return [
        k[: -len(".lora_down.weight")] for k in SafeFile(path) if k.endswith(".lora_down.weight")
    ]


def run_all(
    jobs: list[Job], repeat: int, threads: int | None, timer: str | None, verbose: bool
) -> None:
    base_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            base_env[var] = str(threads)
    startups: dict[tuple[str, ...], float] = {}
    for rep in range(repeat):  # alternate, so load changes hit every tool alike
        for job in jobs:
            if job.best is not None and job.best.rc != 0:
                continue  # failed once: no point in repeating
            if job.out is not None:
                target = job.out if job.out.suffix != ".safetensors" else job.out.parent
                shutil.rmtree(target, ignore_errors=True)
                if job.out.suffix == ".safetensors":
                    job.out.parent.mkdir(parents=True, exist_ok=True)
            env = {**base_env, **job.env}
            if job.env.get("PYTHONPATH"):
                env["PYTHONPATH"] = job.env["PYTHONPATH"]
            m = measure(job.cmd, env, job.cwd, timer)
            if verbose:
                what = f"{job.tool:<28} {job.input:<8} {job.task:<12}"
                print(
                    f"  [{rep + 1}/{repeat}] {what} {m.wall:8.2f} s {m.rss_mb:6.0f} MB rc={m.rc}",
                    file=sys.stderr,
                    flush=True,
                )
            if m.rc != 0:
                job.best = m
                continue
            if job.best is None or m.wall < job.best.wall:
                job.best = m
            job.rss = max(job.rss, m.rss_mb)
            if job.startup is not None:
                key = tuple(job.startup)
                s = measure(job.startup, env, job.cwd, timer)
                if s.rc == 0:
                    startups[key] = min(startups.get(key, float("inf")), s.wall)
    for job in jobs:
        if job.startup is not None:
            job.startup_s = startups.get(tuple(job.startup))


# --------------------------------------------------------------------------- the table


def projected(job: Job) -> float | None:
    if job.best is None or job.fraction is None:
        return None
    kept, total = job.fraction
    start = job.startup_s or 0.0
    return start + (job.best.wall - start) * total / kept


def rank_summary(ranks: dict[str, int]) -> str:
    if not ranks:
        return "-"
    values = sorted(ranks.values())
    if values[0] == values[-1]:
        return f"{values[0]} x {len(values)}"
    return f"{values[0]}-{values[-1]} (median {statistics.median(values):g}, sum {sum(values)})"


def table(
    jobs: list[Job], skipped: list[tuple[str, str, str, str]], inputs: dict[str, Input]
) -> list[str]:
    ours = {(j.input, j.task): j for j in jobs if j.family == "ours" and j.best and j.best.rc == 0}

    def row(*cells: str) -> str:
        return "| " + " | ".join(cells) + " |"

    head = ("input", "tool", "task", "time (s)", "peak RSS (MB)", "time vs ours")
    head += ("excess error vs optimum: max / median", "ranks written", "dtype")
    lines = [row(*head), row(*["---"] * len(head))]
    for job in jobs:
        m = job.best
        if m is None or m.rc != 0:
            why = m.tail.strip().splitlines()[-1][:120] if m and m.tail.strip() else "no output"
            failed = f"failed (exit {m.rc if m else '?'}: {why})"
            lines.append(row(job.input, job.tool, job.task, failed, *[""] * 5))
            continue
        proj = projected(job)
        if proj is not None:
            kept, total = job.fraction or (0, 0)
            time_s = f"**projected {proj:.1f}** (measured {m.wall:.1f} on {kept}/{total} modules)"
        else:
            time_s = f"{m.wall:.2f}"
        ratio = "-"
        if job.family == "ours":
            ratio = "1 (base)"
        elif job.baseline and (job.input, job.baseline) in ours:
            base = ours[(job.input, job.baseline)].best
            assert base is not None
            t = proj if proj is not None else m.wall
            ratio = f"{t / base.wall:.1f}x" + (" (projected)" if proj is not None else "")
            if job.baseline != job.task:
                ratio += f" vs {job.baseline}"
        elif job.baseline:
            ratio = "(ours not run)"
        q = job.quality
        if q is not None and q.excess:
            err = f"{max(q.excess):+.2e} / {statistics.median(q.excess):+.2e}"
            if q.missing:
                err += f" ({len(q.missing)} modules missing)"
            if job.fraction:
                err += f" (on the {job.fraction[0]} modules run)"
            ranks, dtype = rank_summary(q.ranks), q.dtype
        else:
            err, ranks, dtype = "-", "-", "-"
        rss = f"{job.rss:.0f}"
        lines.append(row(job.input, job.tool, job.task, time_s, rss, ratio, err, ranks, dtype))
    for tool, inp, task, why in skipped:
        if inp in inputs:
            lines.append(row(inp, tool, task, why, *[""] * 5))
    return lines


def notes_for(jobs: list[Job], inputs: dict[str, Input]) -> list[str]:
    notes = []
    by = {(j.family, j.tool, j.input, j.task): j for j in jobs}
    for name in ("sdxl", "flux"):
        ours81 = by.get(("ours", "ours", name, "energy 0.81"))
        for job in jobs:
            if (
                job.family != "kohya"
                or job.input != name
                or job.task != "sv_fro 0.9"
                or not job.quality
            ):
                continue
            if not ours81 or not ours81.quality:
                notes.append(
                    f"{name}, {job.tool}: sv_fro 0.9 vs --energy 0.81 not checked (ours not run)"
                )
                continue
            common = [n for n in job.quality.ranks if n in ours81.quality.ranks]
            plus_one = sum(
                job.quality.ranks[n] == min(ours81.quality.ranks[n] + 1, 32) for n in common
            )
            same = sum(job.quality.ranks[n] == ours81.quality.ranks[n] for n in common)
            verdict = (
                "so sv_fro 0.9 keeps one direction more than the 0.81 energy needs"
                if plus_one == len(common)
                else "the +1 relation does NOT hold on every module"
            )
            notes.append(
                f"{name}, {job.tool} sv_fro 0.9: rank = ours --energy 0.81 + 1 on "
                f"{plus_one}/{len(common)} modules (equal on {same}): {verdict}"
            )
    for name in ("llama", "mistral"):
        ours9 = by.get(("ours", "ours", name, "energy 0.9"))
        if not (ours9 and ours9.quality):
            continue
        for job in jobs:
            if job.family == "peft" and job.input == name and job.task == "energy 0.9":
                if not job.quality:
                    continue
                common = [n for n in job.quality.ranks if n in ours9.quality.ranks]
                same = sum(job.quality.ranks[n] == ours9.quality.ranks[n] for n in common)
                notes.append(
                    f"{name}, peft rank=0.9 picks the same rank as ours --energy 0.9 on "
                    f"{same}/{len(common)} modules"
                )
    for name in inputs:
        optimum = [
            statistics.median(j.quality.optimum)
            for j in jobs
            if j.input == name
            and j.family == "ours"
            and j.task.startswith("rank")
            and j.quality
            and j.quality.optimum
        ]
        if optimum:
            notes.append(
                f"{name}: the optimum relative error at rank {RANK} (median over modules) is "
                f"{optimum[0]:.3e}"
            )
    if any(j.fraction for j in jobs):
        s = next(j.startup_s for j in jobs if j.fraction)
        notes.append(
            "kohya runs on a fraction of the modules: projected = startup + (measured - startup) x "
            f"modules/modules run, startup = `resize_lora.py --help` = {s or 0:.1f} s; "
            "the error columns cover the modules run"
        )
    return notes


def machine_line() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = "/".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    now = datetime.datetime.now().astimezone().isoformat(timespec="minutes")
    return (
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs ({model or platform.processor()}), "
        f"load average {load}; python {platform.python_version()}; {now}"
    )


# --------------------------------------------------------------------------- peft worker


def peft_convert(base: str, adapter: str, out: str, rank: str) -> None:
    """The peft run: load the base model and the adapter, ``save_as_lora`` at ``rank``."""
    import torch
    from peft import PeftModel, save_as_lora
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
    model = PeftModel.from_pretrained(model, adapter)
    save_as_lora(out, model, rank=float(rank) if "." in rank else int(rank))


# --------------------------------------------------------------------------- main


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "_peft-convert":
        peft_convert(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, for a smoke run")
    parser.add_argument(
        "--only",
        type=lambda s: [t.strip() for t in s.split(",") if t.strip()],
        default=list(TOOLS),
        help="comma-separated subset of ours,gradience,peft,kohya",
    )
    parser.add_argument(
        "--inputs",
        type=lambda s: [t.strip() for t in s.split(",") if t.strip()],
        default=list(INPUTS),
        help="comma-separated subset of mistral,llama,sdxl,flux",
    )
    parser.add_argument("--repeat", type=int, default=1, help="best of N, tools alternating")
    parser.add_argument(
        "--work", type=Path, help="inputs and outputs (default: TMP/gh-compare[-quick])"
    )
    parser.add_argument("--gradience-python", type=Path, help="a python with gradience 0.11.0")
    parser.add_argument("--sd-scripts", type=Path, help="a kohya-ss/sd-scripts checkout")
    parser.add_argument(
        "--sd-scripts-randomized", type=Path, help="an sd-scripts checkout of PR 2240"
    )
    parser.add_argument("--kohya-python", type=Path, help="the python of the kohya venv")
    parser.add_argument(
        "--kohya-fraction",
        type=float,
        default=1.0,
        help="run kohya on this fraction of the modules and project the time (e.g. 0.1)",
    )
    parser.add_argument(
        "--kohya-flux-fraction",
        type=float,
        help="the same for the Flux file (default: --kohya-fraction; 0.02 = one module per shape)",
    )
    parser.add_argument("--threads", type=int, help="BLAS/OpenMP threads for every tool")
    parser.add_argument("--json-out", type=Path, help="also write the raw results here")
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-run progress on stderr")
    args = parser.parse_args()
    bad = set(args.only) - set(TOOLS)
    if bad:
        parser.error(f"--only: unknown {sorted(bad)}; choose from {','.join(TOOLS)}")
    bad = set(args.inputs) - set(INPUTS)
    if bad:
        parser.error(f"--inputs: unknown {sorted(bad)}; choose from {','.join(INPUTS)}")
    if args.kohya_flux_fraction is None:
        args.kohya_flux_fraction = args.kohya_fraction
    if not (0 < args.kohya_fraction <= 1 and 0 < args.kohya_flux_fraction <= 1):
        parser.error("--kohya-fraction and --kohya-flux-fraction must be in (0, 1]")
    if args.work is None:
        args.work = Path(tempfile.gettempdir()) / (
            "gh-compare-quick" if args.quick else "gh-compare"
        )
    args.work.mkdir(parents=True, exist_ok=True)

    want = set()
    if {"ours", "gradience"} & set(args.only):
        want.add("mistral")
    if {"ours", "peft", "gradience"} & set(args.only):
        want.add("llama")
    if {"ours", "kohya"} & set(args.only):
        want |= {"sdxl", "flux"}
    want &= set(args.inputs)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    log(f"writing inputs under {args.work} ...")
    inputs, notes = prepare_inputs(args.work, args.quick, want)
    skipped: list[tuple[str, str, str, str]] = []
    jobs = build_jobs(args, inputs, skipped)
    timer = gnu_time()
    log(
        f"{len(jobs)} runs x {args.repeat}; peak RSS from "
        + ("GNU time -v" if timer else "a psutil poller")
    )
    run_all(jobs, args.repeat, args.threads, timer, not args.quiet)

    log("checking the written adapters against the optimum ...")
    refs: dict[str, Reference] = {}
    for job in jobs:
        if job.out is None or job.best is None or job.best.rc != 0:
            continue
        inp = inputs[job.input]
        if job.input not in refs:
            refs[job.input] = reference(inp)
        job.quality = quality(inp, refs[job.input], job.out, job.only_modules)

    print(machine_line())
    print(
        "inputs: "
        + "; ".join(f"{i.name} = {i.desc}, {i.dtype}" for i in inputs.values())
        + f"; repeat {args.repeat} (best time, max RSS)"
        + (f"; {args.threads} BLAS threads" if args.threads else "")
    )
    print()
    for line in table(jobs, skipped, inputs):
        print(line)
    print()
    for note in [*notes, *notes_for(jobs, inputs)]:
        print(f"- {note}")
    if args.json_out:
        rows = []
        for j in jobs:
            q = j.quality
            rows.append(
                {
                    "input": j.input,
                    "tool": j.tool,
                    "task": j.task,
                    "cmd": j.cmd,
                    "rc": j.best.rc if j.best else None,
                    "time_s": j.best.wall if j.best else None,
                    "projected_s": projected(j),
                    "startup_s": j.startup_s,
                    "fraction": j.fraction,
                    "peak_rss_mb": j.rss,
                    "excess": q.excess if q else None,
                    "optimum": q.optimum if q else None,
                    "ranks": q.ranks if q else None,
                    "dtype": q.dtype if q else None,
                }
            )
        payload = {"machine": machine_line(), "rows": rows, "skipped": skipped}
        args.json_out.write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
