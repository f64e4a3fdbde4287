"""Local adapter I/O: SOURCE parsing, adapter_config.json, safetensors, PEFT pattern semantics.

A PEFT LoRA adapter is a directory with ``adapter_config.json`` and ``adapter_model.safetensors``
(or the legacy ``adapter_model.bin``). Weights are read one module at a time through
``safetensors.safe_open(framework="numpy")`` (memory-mapped), so peak memory is one module's
factors, not the whole adapter. Hub sources are downloaded by :mod:`gradience_hub.hub` (the only
module that imports huggingface_hub) and then read here like any local directory.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gradience_hub.errors import AdapterError

CONFIG_NAME = "adapter_config.json"
SAFETENSORS_NAME = "adapter_model.safetensors"
BIN_NAME = "adapter_model.bin"
PEFT_PREFIX = "base_model.model."

# Matches PEFT's LoRA tensor names: "<module>.lora_A.weight", "<module>.lora_embedding_B", ...
# Tensor names are untrusted strings: DOTALL so that even a newline cannot hide a factor.
_LORA_KEY = re.compile(
    r"^(?P<module>.+)\.(?P<which>lora_A|lora_B|lora_embedding_A|lora_embedding_B)"
    r"(?:\.(?P<adapter>[^.]+))?(?:\.weight)?$",
    re.DOTALL,
)
_MAGNITUDE_KEY = re.compile(
    r"^(?P<module>.+)\.lora_magnitude_vector(?:\.[^.]+)?(?:\.weight)?$", re.DOTALL
)

_ATTENTION_HINTS = (
    "attn",
    "attention",
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "query",
    "key",
    "value",
    "qkv",
    "wq",
    "wk",
    "wv",
    "wo",
    "out_proj",
    "c_attn",
)
_MLP_HINTS = (
    "mlp",
    "ffn",
    "feed_forward",
    "gate_proj",
    "up_proj",
    "down_proj",
    "fc1",
    "fc2",
    "c_fc",
    "intermediate",
    "w1",
    "w2",
    "w3",
    "dense_h_to_4h",
    "dense_4h_to_h",
)


# --------------------------------------------------------------------------- SOURCE parsing


@dataclass(frozen=True)
class SourceSpec:
    """What the user named: a local directory, or a Hub repo id at an optional revision."""

    raw: str
    local_path: Path | None = None
    repo_id: str | None = None
    revision: str | None = None

    @property
    def is_local(self) -> bool:
        """True for a local directory SOURCE."""
        return self.local_path is not None


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def parse_source(source: str, revision: str | None = None) -> SourceSpec:
    """Parse ``org/name``, ``org/name@rev`` or a local directory; an existing path wins."""
    if not source:
        raise AdapterError(
            "no SOURCE given", hint="pass a local adapter directory or a Hub id org/name"
        )
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise AdapterError(
                f"{source} is a file, not an adapter directory",
                hint="pass the directory that holds adapter_config.json",
            )
        return SourceSpec(raw=source, local_path=path.resolve(), revision=revision)
    repo, _, at_rev = source.partition("@")
    if at_rev and revision and at_rev != revision:
        raise AdapterError(
            f"two revisions given: '@{at_rev}' in SOURCE and --revision {revision}",
            hint="give the revision once",
        )
    if _REPO_ID.match(repo) and ".." not in repo:
        return SourceSpec(raw=source, repo_id=repo, revision=at_rev or revision)
    raise AdapterError(
        f"directory not found: {source}",
        hint="pass an existing adapter directory, or a Hub repo id like org/name[@revision]",
    )


# --------------------------------------------------------------------------- config


def _pattern_key(pattern_keys: list[str], module: str) -> str | None:
    """PEFT's own rule (peft.utils.other.get_pattern_key): the first key whose regex
    ``(.*\\.)?(key)$`` matches the module name wins."""
    for key in pattern_keys:
        try:
            if re.match(rf"(.*\.)?({key})$", module):
                return key
        except re.error as exc:
            raise AdapterError(
                f"adapter_config.json has a pattern key that is not a valid regex: {key!r} ({exc})",
                hint="fix rank_pattern/alpha_pattern in adapter_config.json",
            ) from None
    return None


@dataclass
class AdapterConfig:
    """The LoRA-relevant part of ``adapter_config.json``; ``raw`` keeps every key."""

    raw: dict[str, Any]
    r: int
    lora_alpha: float
    use_rslora: bool = False
    use_dora: bool = False
    fan_in_fan_out: bool = False
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    target_modules: Any = None
    base_model: str | None = None

    def rank_for(self, module: str) -> int:
        """Configured r of ``module`` (``rank_pattern`` first, PEFT's matching rule)."""
        key = _pattern_key(list(self.rank_pattern), module)
        return int(self.rank_pattern[key]) if key is not None else self.r

    def alpha_for(self, module: str) -> float:
        """Configured lora_alpha of ``module`` (``alpha_pattern`` first)."""
        key = _pattern_key(list(self.alpha_pattern), module)
        return float(self.alpha_pattern[key]) if key is not None else self.lora_alpha

    def scale_for(self, module: str, r: int) -> float:
        """PEFT's scaling: alpha / r, or alpha / sqrt(r) under rsLoRA."""
        alpha = self.alpha_for(module)
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r


def read_config(directory: Path) -> AdapterConfig:
    """Read and validate ``adapter_config.json`` in ``directory``."""
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise AdapterError(
            f"no {CONFIG_NAME} in {directory}",
            hint="point SOURCE at a PEFT adapter directory (the output of save_pretrained)",
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterError(f"{path} is not valid JSON: {exc}", hint="re-save the adapter") from None
    if not isinstance(raw, dict):
        raise AdapterError(f"{path} must hold a JSON object", hint="re-save the adapter")
    peft_type = str(raw.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise AdapterError(
            f"{path.name} says peft_type={raw.get('peft_type')!r}; only LoRA adapters "
            "can be audited",
            hint="gradience-hub audits PEFT LoRA adapters (peft_type LORA)",
        )
    try:
        r = int(raw.get("r", 8))
        alpha = float(raw.get("lora_alpha", 8))
        rank_pattern = {str(k): int(v) for k, v in (raw.get("rank_pattern") or {}).items()}
        alpha_pattern = {str(k): float(v) for k, v in (raw.get("alpha_pattern") or {}).items()}
    except (TypeError, ValueError, AttributeError) as exc:
        raise AdapterError(
            f"{path.name} has a bad r/lora_alpha/pattern value: {exc}",
            hint="r and lora_alpha must be numbers",
        ) from None
    if r <= 0:
        raise AdapterError(f"{path.name} has r={r}; r must be positive", hint="re-save the adapter")
    return AdapterConfig(
        raw=raw,
        r=r,
        lora_alpha=alpha,
        use_rslora=bool(raw.get("use_rslora", False)),
        use_dora=bool(raw.get("use_dora", False)),
        fan_in_fan_out=bool(raw.get("fan_in_fan_out", False)),
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        target_modules=raw.get("target_modules"),
        base_model=raw.get("base_model_name_or_path"),
    )


# --------------------------------------------------------------------------- adapter dirs


def list_adapters(directory: Path) -> dict[str, Path]:
    """Adapters in ``directory``: ``"default"`` for the root, subfolder names for the rest
    (the layout of ``PeftModel.save_pretrained`` with several adapters)."""
    found: dict[str, Path] = {}
    if (directory / CONFIG_NAME).is_file():
        found["default"] = directory
    for child in sorted(directory.iterdir()) if directory.is_dir() else []:
        if child.is_dir() and (child / CONFIG_NAME).is_file():
            found[child.name] = child
    return found


def select_adapter(directory: Path, adapter_name: str | None = None) -> Path:
    """The adapter directory to read, following ``--adapter-name`` when several exist."""
    if not directory.is_dir():
        raise AdapterError(f"directory not found: {directory}", hint="check the SOURCE path")
    adapters = list_adapters(directory)
    if adapter_name is not None:
        if adapter_name in adapters:
            return adapters[adapter_name]
        names = ", ".join(adapters) or "none"
        raise AdapterError(
            f"no adapter named '{adapter_name}' in {directory} (found: {names})",
            hint="pick one of the names listed with --adapter-name",
        )
    if "default" in adapters:
        return adapters["default"]
    if len(adapters) == 1:
        return next(iter(adapters.values()))
    if not adapters:
        raise AdapterError(
            f"no {CONFIG_NAME} in {directory}",
            hint="point SOURCE at a PEFT adapter directory (the output of save_pretrained)",
        )
    raise AdapterError(
        f"{directory} holds several adapters: {', '.join(adapters)}",
        hint="choose one with --adapter-name NAME",
    )


def weights_file(directory: Path) -> Path:
    """The adapter's weights file, safetensors preferred."""
    for name in (SAFETENSORS_NAME, BIN_NAME):
        if (directory / name).is_file():
            return directory / name
    raise AdapterError(
        f"no adapter weights in {directory} (expected {SAFETENSORS_NAME} or {BIN_NAME})",
        hint="save the adapter with save_pretrained(), which writes adapter_model.safetensors",
    )


# --------------------------------------------------------------------------- modules


@dataclass
class LoraModule:
    """One LoRA module's factors as 2-D arrays: ``dW = scale * B @ A``.

    ``A`` is ``(r, d_in)`` and ``B`` ``(d_out, r)`` in the stored dtype. Embedding LoRA is
    transposed into this form (PEFT stores ``lora_embedding_A`` as ``(r, vocab)`` and applies
    ``(B @ A).T``) and conv LoRA is flattened (``A``: ``(r, c_in*kh*kw)``); ``fan_in_fan_out``
    only transposes the merged update, so the spectrum is the same either way.
    """

    name: str
    kind: str  # "linear" | "embedding" | "conv"
    A: np.ndarray
    B: np.ndarray
    r: int
    alpha: float
    scale: float
    dtype: str
    has_magnitude: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        """``(d_out, d_in)`` of the update."""
        return int(self.B.shape[0]), int(self.A.shape[1])

    @property
    def params(self) -> int:
        """LoRA parameters of this module: ``r * (d_in + d_out)``."""
        return int(self.A.size + self.B.size)

    @property
    def module_type(self) -> str:
        """attention, mlp or other, from the module name."""
        return module_type(self.name)

    @property
    def layer_index(self) -> int | None:
        """The transformer block index in the name (``...layers.12.self_attn...`` -> 12)."""
        return layer_index(self.name)


def module_type(name: str) -> str:
    """Classify a module name as ``attention``, ``mlp`` or ``other``."""
    parts = [p.lower() for p in name.split(".")]
    leaf = parts[-1] if parts else ""
    if any(h in parts for h in ("mlp", "ffn", "feed_forward", "intermediate")):
        return "mlp"
    if any(h == leaf or h in leaf for h in _MLP_HINTS if len(h) > 2) or leaf in _MLP_HINTS:
        return "mlp"
    if any(h in p for p in parts for h in ("attn", "attention")) or leaf in _ATTENTION_HINTS:
        return "attention"
    return "other"


def layer_index(name: str) -> int | None:
    """First integer path component of a module name, or None."""
    for part in name.split("."):
        if part.isdigit():
            return int(part)
    return None


def strip_prefix(key: str) -> str:
    """Module name as PEFT's rank_pattern sees it (without ``base_model.model.``)."""
    return key[len(PEFT_PREFIX) :] if key.startswith(PEFT_PREFIX) else key


class _TensorReader:
    """Uniform access to tensors of a safetensors (mmap, lazy) or .bin (torch, weights only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._st: Any = None
        self._bin: dict[str, np.ndarray] | None = None
        if path.suffix == ".safetensors":
            self._open_safetensors()
        else:
            self._bin = _load_bin(path)

    def _open_safetensors(self) -> None:
        # ml_dtypes registers bfloat16 (and fp8) with numpy; without it safetensors cannot
        # hand bf16 tensors to numpy ("data type 'bfloat16' not understood").
        import ml_dtypes  # noqa: F401
        from safetensors import safe_open

        size = self.path.stat().st_size
        try:
            self._st = safe_open(str(self.path), framework="numpy")
            self._keys = list(self._st.keys())
        except Exception as exc:  # safetensors raises its own SafetensorError / OSError types
            raise AdapterError(
                f"{self.path.name} is not a readable safetensors file ({size} bytes): {exc}",
                hint="the file is truncated or corrupt; download or save the adapter again",
            ) from None

    def names(self) -> list[str]:
        return list(self._keys) if self._st is not None else list(self._bin or {})

    def get(self, key: str) -> np.ndarray:
        if self._bin is not None:
            return self._bin[key]
        try:
            return self._st.get_tensor(key)
        except Exception as exc:
            raise AdapterError(
                f"cannot read tensor {key} from {self.path.name}: {exc}",
                hint="the file is truncated or corrupt; download or save the adapter again",
            ) from None

    def dtype(self, key: str) -> str:
        if self._bin is not None:
            return str(self._bin[key].dtype)
        sl = self._st.get_slice(key)
        return str(sl.get_dtype()).lower()


def _widen(X: np.ndarray) -> np.ndarray:
    """bf16/fp16/fp8 -> float32, exactly. bf16 is the top half of a float32, so a 16-bit shift
    of the raw bits is exact and ~20x faster than ml_dtypes' element-wise cast."""
    if X.dtype.name == "bfloat16":
        return (X.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    if X.dtype.kind == "f" and X.dtype.itemsize >= 4:
        return X
    return X.astype(np.float32)


def _load_bin(path: Path) -> dict[str, np.ndarray]:
    """Load a legacy ``adapter_model.bin`` without unpickling arbitrary objects."""
    try:
        import torch
    except ImportError:
        raise AdapterError(
            f"{path.name} is a PyTorch pickle; reading it safely needs torch",
            hint="install torch (pip install 'gradience-hub[bench]') or convert the adapter "
            "to safetensors",
        ) from None
    try:
        # weights_only=True refuses arbitrary pickled objects: a .bin from the Hub is untrusted.
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AdapterError(
            f"{path.name} could not be loaded with torch.load(weights_only=True): {exc}",
            hint="the file is corrupt or contains objects other than tensors; use safetensors",
        ) from None
    if not isinstance(state, dict):
        raise AdapterError(f"{path.name} does not hold a state dict", hint="re-save the adapter")
    out: dict[str, np.ndarray] = {}
    for key, tensor in state.items():
        if hasattr(tensor, "detach"):
            t = tensor.detach().cpu()
            out[key] = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
    return out


@dataclass
class _Pair:
    a_key: str | None = None
    b_key: str | None = None
    embedding: bool = False


class Adapter:
    """An opened LoRA adapter: config, weights file, LoRA pairs and other tensors.

    Iterate :meth:`modules` to stream one :class:`LoraModule` at a time.
    """

    def __init__(self, directory: Path, config: AdapterConfig, weights: Path) -> None:
        self.directory = directory
        self.config = config
        self.weights_path = weights
        self._reader = _TensorReader(weights)
        self.pairs: dict[str, _Pair] = {}
        self.magnitude_modules: set[str] = set()
        self.other_keys: list[str] = []
        for key in self._reader.names():
            m = _LORA_KEY.match(key)
            if m and not key.endswith(".bias"):
                name = strip_prefix(m.group("module"))
                pair = self.pairs.setdefault(name, _Pair())
                which = m.group("which")
                pair.embedding = pair.embedding or which.startswith("lora_embedding")
                if which.endswith("A"):
                    pair.a_key = key
                else:
                    pair.b_key = key
                continue
            mm = _MAGNITUDE_KEY.match(key)
            if mm:
                self.magnitude_modules.add(strip_prefix(mm.group("module")))
            self.other_keys.append(key)
        for name, pair in self.pairs.items():
            if pair.a_key is None or pair.b_key is None:
                have, miss = ("lora_A", "lora_B") if pair.b_key is None else ("lora_B", "lora_A")
                raise AdapterError(
                    f"module {name} has {have} but no {miss} in {weights.name}",
                    hint="the weights file is incomplete; save the adapter again",
                )
        if not self.pairs:
            raise AdapterError(
                f"{weights.name} holds no LoRA factors (no lora_A/lora_B tensors)",
                hint="is this a LoRA adapter saved by PEFT?",
            )

    @property
    def is_dora(self) -> bool:
        """True for a DoRA adapter (magnitude vectors present or use_dora set)."""
        return self.config.use_dora or bool(self.magnitude_modules)

    @property
    def module_names(self) -> list[str]:
        """LoRA module names in file order (without the ``base_model.model.`` prefix)."""
        return list(self.pairs)

    def tensor(self, key: str) -> np.ndarray:
        """Any tensor of the weights file by its stored key."""
        return self._reader.get(key)

    def dtype_of(self, key: str) -> str:
        """Stored dtype name of a tensor."""
        return self._reader.dtype(key)

    def module(self, name: str) -> LoraModule:
        """Read one module's factors, validate them and attach r, alpha and scale."""
        pair = self.pairs[name]
        assert pair.a_key is not None and pair.b_key is not None
        A = self._reader.get(pair.a_key)
        B = self._reader.get(pair.b_key)
        dtype = str(A.dtype)
        A, B = _widen(A), _widen(B)
        if pair.embedding:
            # PEFT: lora_embedding_A is (r, vocab), lora_embedding_B is (dim, r) and the update
            # is (B @ A).T; transposition does not change singular values, keep (B, A).
            kind = "embedding"
        elif A.ndim == 4 or B.ndim == 4:
            kind = "conv"
            A = A.reshape(A.shape[0], -1)
            B = B.reshape(B.shape[0], -1)
        else:
            kind = "linear"
        if A.ndim != 2 or B.ndim != 2:
            raise AdapterError(
                f"module {name}: factors must be matrices, got A{A.shape} B{B.shape}",
                hint="the weights file is not a LoRA adapter PEFT can load",
            )
        r = A.shape[0]
        if B.shape[1] != r:
            raise AdapterError(
                f"module {name}: shapes do not chain: lora_B is {tuple(B.shape)} and lora_A is "
                f"{tuple(A.shape)} (B's columns must equal A's rows)",
                hint="the weights file is corrupt or was edited; save the adapter again",
            )
        for label, X in (("lora_A", A), ("lora_B", B)):
            if not np.all(np.isfinite(X)):
                raise AdapterError(
                    f"module {name}: {label} contains NaN or Inf values",
                    hint="training diverged; retrain or load an earlier checkpoint",
                )
        return LoraModule(
            name=name,
            kind=kind,
            A=A,
            B=B,
            r=r,
            alpha=self.config.alpha_for(name),
            scale=self.config.scale_for(name, r),
            dtype=dtype,
            has_magnitude=name in self.magnitude_modules,
        )

    def modules(self) -> Iterator[LoraModule]:
        """Stream modules one at a time (peak memory: one module's factors)."""
        for name in self.pairs:
            yield self.module(name)


def open_adapter(directory: Path, adapter_name: str | None = None) -> Adapter:
    """Open the (selected) adapter in a local directory."""
    chosen = select_adapter(directory, adapter_name)
    config = read_config(chosen)
    return Adapter(chosen, config, weights_file(chosen))


# --------------------------------------------------------------------------- SOURCE -> adapter


@dataclass(frozen=True)
class SourceInfo:
    """Where an opened adapter came from, as recorded in audit.json's ``source``."""

    kind: str  # "local" | "hub"
    path: str
    repo_id: str | None = None
    revision: str | None = None
    sha: str | None = None
    adapter_name: str | None = None

    @property
    def display(self) -> str:
        """``org/name @ 3f2a1c9`` for the Hub, the directory for local sources."""
        if self.kind == "hub":
            return f"{self.repo_id} @ {(self.sha or self.revision or 'main')[:7]}"
        return self.path

    def to_dict(self) -> dict[str, Any]:
        """JSON form (audit.json ``source``)."""
        return {
            "kind": self.kind,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "sha": self.sha,
            "path": self.path if self.kind == "local" else None,
            "adapter_name": self.adapter_name,
            "display": self.display,
        }


def load(
    source: str, revision: str | None = None, adapter_name: str | None = None
) -> tuple[Adapter, SourceInfo]:
    """Open SOURCE (local directory, ``org/name``, ``org/name@rev``) as an :class:`Adapter`.

    Hub sources are downloaded (adapter files only) through :mod:`gradience_hub.hub`.
    """
    spec = parse_source(source, revision)
    if spec.local_path is not None:
        adapter = open_adapter(spec.local_path, adapter_name)
        return adapter, SourceInfo(
            kind="local", path=str(adapter.directory), adapter_name=adapter_name
        )
    from gradience_hub import hub  # deferred: local audits never import huggingface_hub

    assert spec.repo_id is not None
    dl = hub.download_adapter(spec.repo_id, spec.revision, adapter_name)
    if not list_adapters(dl.path):
        raise AdapterError(
            f"{spec.repo_id} has no {CONFIG_NAME} at {dl.sha[:7]}",
            hint="is this repo a PEFT adapter? (a full model has no adapter_config.json)",
        )
    adapter = open_adapter(dl.path, adapter_name)
    return adapter, SourceInfo(
        kind="hub",
        path=str(adapter.directory),
        repo_id=spec.repo_id,
        revision=spec.revision,
        sha=dl.sha,
        adapter_name=adapter_name,
    )
