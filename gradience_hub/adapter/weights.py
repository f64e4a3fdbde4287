"""LoRA factor pairs streamed from safetensors (or a weights-only .bin), one module at a time.

Weights are read by their header offsets from the memory-mapped file (adapter/safetensors_io.py),
so peak memory is one module's factors, not the whole adapter, and bf16/fp8 factors arrive as
exact float32 without importing ml_dtypes.
"""

# Over 500 lines: PEFT, kohya-ss and diffusers layouts share one streamed pair reader.

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradience_hub.adapter.config import (
    PEFT_PREFIX,
    AdapterConfig,
    list_adapters,
    read_config,
    select_adapter,
    weights_file,
)
from gradience_hub.adapter.lorafile import (
    METADATA_KEY,
    PEFT,
    FileLayout,
    detect,
    is_factor_name,
    layout_for,
    lora_files,
)
from gradience_hub.adapter.moe import Expert, experts_of, parameter_names
from gradience_hub.adapter.safetensors_io import SafetensorsFile, SafetensorsFormatError
from gradience_hub.errors import AdapterError

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
    # the name peft's rank_pattern/alpha_pattern rule sees (the parameter, for an expert)
    config_key: str | None = None
    groups: int = 1  # a grouped conv's lora_B groups (B is then block-diagonal)
    # the rank the adapter's config (or a LoRA file's saved LoraConfig) declares for this
    # module; None where nothing declares one (a kohya file)
    configured_r: int | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(d_out, d_in)`` of the update."""
        return int(self.B.shape[0]), int(self.A.shape[1])

    @property
    def params(self) -> int:
        """LoRA parameters of this module as stored: ``r * d_in + r * d_out / groups``."""
        return int(self.A.size + self.B.size // self.groups)

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
    # T5's feed-forward block is "DenseReluDense" (wi, wi_0, wi_1, wo): its "wo" is not
    # the attention output that the same leaf name means elsewhere.
    if any(
        h in parts
        for h in ("mlp", "ffn", "feed_forward", "intermediate", "densereludense", "experts")
    ):
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
        # .bin: key -> (stored dtype name, values as numpy)
        self._bin: dict[str, tuple[str, np.ndarray]] | None = None
        if path.suffix == ".safetensors":
            self._open_safetensors()
        else:
            self._bin = _load_bin(path)

    def _open_safetensors(self) -> None:
        # Read by header offsets (safetensors_io), not safetensors.numpy: bf16/fp8 come back
        # as exact float32 without ml_dtypes, whose import alone outweighs an audit.
        size = self.path.stat().st_size
        try:
            self._st = SafetensorsFile(self.path)
        except (SafetensorsFormatError, OSError) as exc:
            raise AdapterError(
                f"{self.path.name} is not a readable safetensors file ({size} bytes): {exc}",
                hint="the file is truncated or corrupt; download or save the adapter again",
            ) from None
        self._keys = self._st.names()

    def names(self) -> list[str]:
        return list(self._keys) if self._st is not None else list(self._bin or {})

    def get(self, key: str) -> np.ndarray:
        """The tensor as numpy: bf16 and fp8 widened to float32 (exact), others as stored."""
        if self._bin is not None:
            return self._bin[key][1]
        return self._st.get(key)

    def metadata(self) -> dict[str, str]:
        """The safetensors header's ``__metadata__`` (empty for .bin)."""
        if self._st is None:
            return {}
        return self._st.metadata()

    def shape(self, key: str) -> tuple[int, ...]:
        if self._bin is not None:
            return tuple(self._bin[key][1].shape)
        return self._st.shape(key)

    def dtype(self, key: str) -> str:
        """The stored dtype, named as safetensors does in lower case (``bf16``, ``f32``)."""
        if self._bin is not None:
            return self._bin[key][0]
        return self._st.dtype(key).lower()


class UnreadableModule(AdapterError):
    """One module's factors have a layout this reader does not understand: the audit skips
    that module with a warning naming it (the rest is still audited)."""


def conv_factors(name: str, A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """peft's conv LoRA (Conv1d/2d/3d) as the matrices of the update it applies, and groups.

    ``lora_A`` is a conv ``(r, c_in, *kernel)`` and ``lora_B`` a pointwise conv
    ``(c_out, r / groups, 1, ...)`` with the base layer's ``groups``: on flattened input patches
    the update is ``B_full @ A`` with ``A`` as ``(r, c_in * prod(kernel))`` and ``B_full`` the
    ``(c_out, r)`` block-diagonal matrix whose block ``j`` (``c_out / g`` rows, ``r / g``
    columns) is ``lora_B``'s group ``j``: output group ``j`` reads only rank channels of group
    ``j``. For ``groups = 1`` that is the usual ``B @ A`` of the flattened kernels.
    """
    if any(int(d) != 1 for d in B.shape[2:]):
        raise UnreadableModule(
            f"module {name}: conv lora_B has kernel {tuple(B.shape[2:])}, not 1 x ... x 1",
            hint="peft's conv LoRA has a pointwise lora_B; this layout is not supported",
        )
    r = A.shape[0]
    A2 = A.reshape(r, -1)
    B2 = B.reshape(B.shape[0], -1)
    per_group = B2.shape[1]
    if per_group == r:
        return A2, B2, 1
    c_out = B2.shape[0]
    if per_group == 0 or r % per_group or c_out % (r // per_group):
        raise UnreadableModule(
            f"module {name}: shapes do not chain: conv lora_B is {tuple(B.shape)} and lora_A is "
            f"{tuple(A.shape)} (B's channels must be r / groups)",
            hint="the weights file is corrupt or was edited; save the adapter again",
        )
    groups = r // per_group
    rows = c_out // groups
    B_full = np.zeros((c_out, r), dtype=B2.dtype)
    for j in range(groups):
        B_full[j * rows : (j + 1) * rows, j * per_group : (j + 1) * per_group] = B2[
            j * rows : (j + 1) * rows
        ]
    return A2, B_full, groups


def check_factor(name: str, label: str, X: np.ndarray) -> None:
    """Refuse factors that are not floating point (int, bool: compress would write garbage) or
    have no elements (a ``(4, 0)`` factor is no linear map PEFT can build)."""
    if X.dtype.kind != "f":  # bf16/fp8 are read as float32
        raise AdapterError(
            f"module {name}: {label} has dtype {X.dtype.name}; LoRA factors must be floating point",
            hint="the weights file is not a LoRA adapter PEFT saved; save it again",
        )
    if X.size == 0:
        raise AdapterError(
            f"module {name}: {label} has shape {tuple(X.shape)} with no elements",
            hint="the weights file is corrupt or was edited; save the adapter again",
        )


# safetensors' dtype names as numpy and ml_dtypes name them (what the audit and compress report)
STORED_DTYPE_NAMES = {
    "bf16": "bfloat16",
    "f16": "float16",
    "f32": "float32",
    "f64": "float64",
    "f8_e4m3": "float8_e4m3fn",
    "f8_e5m2": "float8_e5m2",
}


def widen(X: np.ndarray) -> np.ndarray:
    """fp16 -> float32, exactly; wider floats as they are (the reader already widened bf16 and
    fp8 from their bits)."""
    if X.dtype.kind == "f" and X.dtype.itemsize >= 4:
        return X
    return X.astype(np.float32)


def _load_bin(path: Path) -> dict[str, tuple[str, np.ndarray]]:
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
        # torch's refusal is a nine-line essay; its first line names the offending global.
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise AdapterError(
            f"{path.name} could not be loaded with torch.load(weights_only=True): {first[:200]}",
            hint="the file is corrupt or contains objects other than tensors; use safetensors",
        ) from None
    if not isinstance(state, dict):
        raise AdapterError(f"{path.name} does not hold a state dict", hint="re-save the adapter")
    out: dict[str, tuple[str, np.ndarray]] = {}
    for key, tensor in state.items():
        if isinstance(tensor, torch.Tensor):
            out[str(key)] = _torch_to_numpy(tensor.detach().cpu())
    return out


def _torch_to_numpy(t: Any) -> tuple[str, np.ndarray]:
    """A CPU tensor as (its dtype's safetensors name, numpy values): bf16 and fp8, which numpy
    lacks, become float32 (exact) and keep their name, so a written-back adapter keeps them."""
    import torch

    names = {
        torch.bfloat16: "bf16",
        torch.float8_e4m3fn: "f8_e4m3",
        torch.float8_e5m2: "f8_e5m2",
        torch.float16: "f16",
        torch.float32: "f32",
        torch.float64: "f64",
    }
    name = names.get(t.dtype)
    if name in ("bf16", "f8_e4m3", "f8_e5m2"):
        return name, t.float().numpy()
    try:
        values = t.numpy()
    except (TypeError, RuntimeError) as exc:
        raise AdapterError(
            f"tensor of dtype {t.dtype} cannot be read: {exc}",
            hint="save the adapter as safetensors",
        ) from None
    return name or str(values.dtype), values


def factor_shape(reader: _TensorReader, key: str) -> tuple[int, ...]:
    """The stored shape of factor ``key``, refused (exit 2, naming the file and the key) when
    it has fewer than two dimensions: the rank is read off a factor's shape, and a scalar or a
    vector has no rank to read."""
    shape = reader.shape(key)
    if len(shape) < 2:
        raise AdapterError(
            f"{reader.path.name}: {key} has shape {tuple(shape)}; a LoRA factor is a matrix "
            "or a conv kernel (2 to 5 dimensions)",
            hint="the file is corrupt or was edited; save the adapter again",
        )
    return tuple(shape)


@dataclass
class _Pair:
    a_key: str | None = None
    b_key: str | None = None
    embedding: bool = False


class Adapter:
    """An opened LoRA adapter: config, weights file, LoRA pairs and other tensors.

    Iterate :meth:`modules` to stream one :class:`LoraModule` at a time.
    """

    def __init__(
        self,
        directory: Path,
        config: AdapterConfig,
        weights: Path,
        layout: FileLayout | None = None,
        reader: _TensorReader | None = None,
    ) -> None:
        self.directory = directory
        self.config = config
        self.weights_path = weights
        self.layout = layout
        self._reader = reader or _TensorReader(weights)
        self.pairs: dict[str, _Pair] = {}
        self.magnitude_modules: set[str] = set()
        self.other_keys: list[str] = []
        for key in self._reader.names():
            if layout is not None:
                found = layout.match(key)
                if found is None:
                    self.other_keys.append(key)
                    continue
                pair = self.pairs.setdefault(found[0], _Pair())
                if found[1] == "A":
                    pair.a_key = key
                else:
                    pair.b_key = key
                continue
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
            factor_shape(self._reader, pair.a_key)
            factor_shape(self._reader, pair.b_key)
        self._refuse_unread_factors()
        if not self.pairs:
            raise AdapterError(
                f"{weights.name} holds no LoRA factors (no lora_A/lora_B tensors)",
                hint="is this a LoRA adapter saved by PEFT?",
            )
        # peft's target_parameters LoRA: one stacked pair per expert parameter (adapter.moe)
        self.experts: dict[str, Expert] = {}
        self._names: list[str] = []
        wrapped = parameter_names(list(self.pairs), config.raw)
        for stored, pair in self.pairs.items():
            if stored not in wrapped:
                self._names.append(stored)
                continue
            assert pair.a_key is not None and pair.b_key is not None
            rows = factor_shape(self._reader, pair.a_key)[0]
            cols = factor_shape(self._reader, pair.b_key)[-1]
            parameter = wrapped[stored]
            for expert in experts_of(stored, parameter, rows, cols, config.rank_for(parameter)):
                self.experts[expert.name] = expert
                self._names.append(expert.name)

    def _refuse_unread_factors(self) -> None:
        """Refuse a file holding factors of another layout next to the ones this reader reads
        (PEFT keys beside kohya ones, LoCon's lora_mid): auditing only the readable part would
        drop the rest without a word."""
        unread = [k for k in self.other_keys if is_factor_name(k)]
        if unread:
            count = "a LoRA factor" if len(unread) == 1 else f"{len(unread)} LoRA factors"
            raise AdapterError(
                f"{self.weights_path.name} mixes layouts: {count} ({unread[0]}) are not in its "
                f"{self.format} layout and would be dropped from the audit",
                hint="split the file by layout, or convert it to one layout first",
            )

    @property
    def config_origin(self) -> str:
        """Where the configured ranks and alphas come from, for messages."""
        if self.layout is None:
            return "adapter_config.json"
        return f"{METADATA_KEY} of {self.weights_path.name}"

    @property
    def format(self) -> str:
        """``peft``, ``kohya`` or ``diffusers``: the layout the weights were read in."""
        return self.layout.name if self.layout is not None else "peft"

    def _file_scale(self, name: str, r: int) -> tuple[float, float, int | None]:
        """(alpha, scale, configured rank) of a kohya/diffusers module (adapter.lorafile's
        rules)."""
        assert self.layout is not None
        key = self.layout.alphas.get(name)
        if key is not None:
            alpha_arr = widen(self._reader.get(key))
            if alpha_arr.size != 1 or not np.isfinite(alpha_arr).all():
                raise AdapterError(
                    f"{self.weights_path.name}: {key} must be one finite number, got shape "
                    f"{alpha_arr.shape}",
                    hint="the LoRA file is corrupt; save it again",
                )
            alpha = float(alpha_arr.reshape(-1)[0])
            return alpha, alpha / r, None
        fields = self.layout.rule(name)
        if fields is None:
            return float(r), 1.0, None
        rule = AdapterConfig(
            raw=self.layout.component_config(name),
            # no r saved: the tensors' own; no lora_alpha: scale 1 (alpha = r)
            r=r if fields.r is None else fields.r,
            lora_alpha=float(r) if fields.lora_alpha is None else fields.lora_alpha,
            use_rslora=fields.use_rslora,
            rank_pattern=fields.rank_pattern,
            alpha_pattern=fields.alpha_pattern,
        )
        inner = name.split(".", 1)[1] if "." in name else name
        return rule.alpha_for(inner), rule.scale_for(inner, r), rule.rank_for(inner)

    @property
    def is_dora(self) -> bool:
        """True for a DoRA adapter (magnitude vectors present or use_dora set)."""
        return self.config.use_dora or bool(self.magnitude_modules)

    @property
    def module_names(self) -> list[str]:
        """LoRA module names in file order (without the ``base_model.model.`` prefix); each
        expert of a ``target_parameters`` pair is its own module, ``<module>.<param>[e]``."""
        return list(self._names)

    @property
    def has_experts(self) -> bool:
        """True when the adapter holds peft ``target_parameters`` (expert) LoRA."""
        return bool(self.experts)

    def tensor(self, key: str) -> np.ndarray:
        """Any tensor of the weights file by its stored key."""
        return self._reader.get(key)

    @property
    def tensor_names(self) -> list[str]:
        """Every tensor key of the weights file, in file order."""
        return self._reader.names()

    def header_metadata(self) -> dict[str, str]:
        """The safetensors header's ``__metadata__`` (empty for .bin)."""
        return self._reader.metadata()

    def dtype_of(self, key: str) -> str:
        """Stored dtype name of a tensor, as safetensors names it in lower case (``bf16``)."""
        return self._reader.dtype(key)

    def stored_dtypes(self) -> dict[str, str]:
        """Every tensor's stored dtype: what a written-back copy keeps (see
        :func:`~gradience_hub.adapter.safetensors_io.write_safetensors`)."""
        return {key: self._reader.dtype(key) for key in self._reader.names()}

    def module(self, name: str) -> LoraModule:
        """Read one module's factors, validate them and attach r, alpha and scale."""
        expert = self.experts.get(name)
        pair = self.pairs[expert.stored if expert else name]
        assert pair.a_key is not None and pair.b_key is not None
        A = self._reader.get(pair.a_key)
        B = self._reader.get(pair.b_key)
        rule_name = name
        groups = 1
        if expert is not None:
            # peft's ParamWrapper.get_delta_weight: A (E, r, d_in), B (d_out, r, E)
            r_e = A.shape[0] // expert.n_experts
            A = A[expert.index * r_e : (expert.index + 1) * r_e]
            B = B[:, expert.index :: expert.n_experts]
            rule_name = expert.parameter
        stored = self._reader.dtype(pair.a_key)
        dtype = STORED_DTYPE_NAMES.get(stored, stored)
        for label, X in (("lora_A", A), ("lora_B", B)):
            check_factor(name, label, X)
        A, B = widen(A), widen(B)
        if pair.embedding:
            # PEFT: lora_embedding_A is (r, vocab), lora_embedding_B is (dim, r) and the update
            # is (B @ A).T; transposition does not change singular values, keep (B, A).
            kind = "embedding"
        elif A.ndim >= 3 and A.ndim == B.ndim and A.ndim <= 5:
            kind = "conv"
            A, B, groups = conv_factors(name, A, B)
        else:
            kind = "linear"
        if A.ndim != 2 or B.ndim != 2:
            raise UnreadableModule(
                f"module {name}: factors must be matrices, got A{A.shape} B{B.shape}",
                hint="the weights file is not a LoRA adapter PEFT can load",
            )
        r = A.shape[0]
        if B.shape[1] != r:
            raise UnreadableModule(
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
        if self.layout is not None:
            alpha, scale, configured = self._file_scale(name, r)
        else:
            alpha, scale = self.config.alpha_for(rule_name), self.config.scale_for(rule_name, r)
            configured = self.config.rank_for(rule_name)
        if not math.isfinite(scale):
            raise AdapterError(
                f"module {name}: scale alpha/r = {scale} is not a finite number",
                hint=f"fix the alpha in {self.config_origin}",
            )
        return LoraModule(
            name=name,
            kind=kind,
            A=A,
            B=B,
            r=r,
            alpha=alpha,
            scale=scale,
            dtype=dtype,
            has_magnitude=name in self.magnitude_modules,
            config_key=rule_name,
            groups=groups if kind == "conv" else 1,
            configured_r=configured,
        )

    def modules(self) -> Iterator[LoraModule]:
        """Stream modules one at a time (peak memory: one module's factors)."""
        for name in self._names:
            yield self.module(name)


def open_lora_file(path: Path) -> Adapter:
    """Open a kohya-ss or diffusers LoRA file (no adapter_config.json; adapter.lorafile)."""
    if path.suffix != ".safetensors":
        raise AdapterError(
            f"{path.name}: LoRA files are read as safetensors",
            hint="pass a .safetensors LoRA file or a PEFT adapter directory",
        )
    reader = _TensorReader(path)
    names = reader.names()
    kind = detect(names)
    if kind is None or kind == PEFT:
        what = "PEFT LoRA tensors but no adapter_config.json" if kind else "no LoRA factors"
        raise AdapterError(
            f"{path.name} holds {what}",
            hint="point SOURCE at a PEFT adapter directory, or a kohya/diffusers LoRA file",
        )
    layout = layout_for(path, names, kind, reader.metadata())
    ranks = [factor_shape(reader, k)[0] for k in names if (m := layout.match(k)) and m[1] == "A"]
    r = max(set(ranks), key=ranks.count) if ranks else 1
    config = AdapterConfig(raw={"peft_type": "LORA", "format": kind}, r=r, lora_alpha=float(r))
    return Adapter(path.parent, config, path, layout=layout, reader=reader)


def open_adapter(directory: Path, adapter_name: str | None = None) -> Adapter:
    """Open the (selected) adapter in a local directory; a directory without
    adapter_config.json that holds a kohya/diffusers LoRA file opens that file."""
    if directory.is_file():
        return open_lora_file(directory)
    if directory.is_dir() and not list_adapters(directory) and adapter_name is None:
        files = lora_files(directory)
        if files:
            return open_lora_file(files[0])
    chosen = select_adapter(directory, adapter_name)
    config = read_config(chosen)
    return Adapter(chosen, config, weights_file(chosen))
