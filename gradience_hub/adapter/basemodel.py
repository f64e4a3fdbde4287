"""A base model's weights, tensor by tensor, for UDR: safetensors headers, byte ranges, names.

The base is read one tensor at a time and only the tensors an adapter targets: a reader
(:class:`BaseWeights`) lists every tensor with its file and absolute byte range, and hands back
exactly those bytes; a local directory (:class:`LocalBase`) seeks and reads them, the Hub reader
(``hub/base_ranges.py``) asks for them with HTTP Range requests. Both count the bytes they read.

Where the tensors are: ``model.safetensors`` or a sharded ``model.safetensors.index.json`` at the
top (transformers), and the same (or ``diffusion_pytorch_model*``) in the component folders of a
diffusers pipeline (``unet/``, ``text_encoder/``, ``text_encoder_2/``, ``transformer/``), whose
tensors are named ``<component>/<name>``.

Which tensor belongs to an adapter's module (:func:`map_module`), in the layout peft uses:
``<module>.weight`` (a linear, an embedding or a conv kernel, flattened by ``udr.as_matrix``),
a leading wrapper name tolerated on either side (``model.``, ``bert.``: an adapter of a task
model over a bare checkpoint); an expert ``<module>.<parameter>[e]`` of peft's
``target_parameters`` is slice ``e`` of the stacked parameter; a diffusers LoRA module
``unet.<name>`` is ``unet/<name>.weight``; a kohya module ``lora_unet_<name with _>`` (``te``/
``te1``: text_encoder, ``te2``: text_encoder_2) is the base tensor whose name, dots turned to
underscores, matches.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from gradience_hub.errors import AdapterError

COMPONENTS = ("", "unet", "text_encoder", "text_encoder_2", "transformer")
WEIGHT_STEMS = ("model", "diffusion_pytorch_model")
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on a header
_KOHYA_PREFIX = {
    "lora_unet_": "unet",
    "lora_transformer_": "transformer",
    "lora_te_": "text_encoder",
    "lora_te1_": "text_encoder",
    "lora_te2_": "text_encoder_2",
}
_EXPERT = re.compile(r"^(?P<param>.+)\[(?P<e>\d+)\]$")
_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # decoded by a 16-bit shift into float32 (exact)
}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a base: the file (relative to the base), dtype, shape and the absolute
    byte range ``[begin, end)`` of its data in that file."""

    file: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor's data."""
        return self.end - self.begin


def header_length(first8: bytes, where: str) -> int:
    """The JSON header's length from a safetensors file's first 8 bytes."""
    if len(first8) < 8:
        raise AdapterError(f"{where}: not a safetensors file (shorter than 8 bytes)")
    (n,) = struct.unpack("<Q", first8[:8])
    if n > MAX_HEADER:
        raise AdapterError(f"{where}: safetensors header of {n} bytes is too large")
    return int(n)


def entries_from_header(
    header: dict[str, object], file: str, data_start: int, where: str
) -> dict[str, TensorEntry]:
    """Tensor entries of one file from its parsed JSON header (``data_start`` = 8 + header
    length, where the offsets start)."""
    out: dict[str, TensorEntry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            assert isinstance(info, dict)
            begin, end = (int(x) for x in info["data_offsets"])
            shape = tuple(int(x) for x in info["shape"])
            dtype = str(info["dtype"])
        except (AssertionError, KeyError, TypeError, ValueError):
            raise AdapterError(f"{where}: tensor {name!r} has no valid entry") from None
        out[name] = TensorEntry(file, dtype, shape, data_start + begin, data_start + end)
    return out


def decode(raw: bytes, entry: TensorEntry, name: str) -> np.ndarray:
    """The tensor's bytes as a float array of its shape (bf16 -> float32 exactly)."""
    dtype = _DTYPES.get(entry.dtype)
    if dtype is None:
        raise AdapterError(f"base tensor {name}: dtype {entry.dtype} is not a float weight")
    count = int(np.prod(entry.shape)) if entry.shape else 1
    if len(raw) != count * dtype.itemsize:
        raise AdapterError(
            f"base tensor {name}: {len(raw)} bytes read, {count * dtype.itemsize} expected"
        )
    array: np.ndarray = np.frombuffer(raw, dtype=dtype)
    if entry.dtype == "BF16":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array.reshape(entry.shape)


class BaseWeights(Protocol):
    """A base model's tensors, read by byte range."""

    identity: str  # what the norms cache is keyed by: "repo@sha" or a resolved directory
    bytes_read: int  # every byte read so far by the reader itself

    @property
    def entries(self) -> dict[str, TensorEntry]:
        """Every tensor of the base by (qualified) name."""
        ...

    def read(self, entry: TensorEntry) -> bytes:
        """Exactly the bytes of ``entry``."""
        ...


def read_tensor(base: BaseWeights, name: str) -> np.ndarray:
    """One base tensor as an array."""
    entry = base.entries[name]
    return decode(base.read(entry), entry, name)


def weight_files(files: list[str]) -> dict[str, list[str]]:
    """Per component, the index file or the single weight file to read, from a file listing
    (paths relative to the base). An index wins over single files of the same stem."""
    present = set(files)
    out: dict[str, list[str]] = {}
    for comp in COMPONENTS:
        at = f"{comp}/" if comp else ""
        for stem in WEIGHT_STEMS:
            index = f"{at}{stem}.safetensors.index.json"
            single = f"{at}{stem}.safetensors"
            if index in present:
                out[comp] = [index]
                break
            if single in present:
                out[comp] = [single]
                break
    return out


def shards_of_index(index: dict[str, object], at: str, where: str) -> list[str]:
    """The shard files an index names (``at``: its folder, with a trailing slash or empty)."""
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise AdapterError(f"{where}: the safetensors index has no weight_map")
    shards = sorted({str(v) for v in weight_map.values()})
    for shard in shards:
        if "/" in shard or shard.startswith("."):
            raise AdapterError(f"{where}: the index names a shard outside its folder: {shard!r}")
    return [f"{at}{s}" for s in shards]


def qualified(component: str, name: str) -> str:
    """A tensor's name across components: ``unet/<name>``, or ``<name>`` at the top."""
    return f"{component}/{name}" if component else name


class LocalBase:
    """A base model in a local directory (:class:`BaseWeights`): only headers and the tensors
    asked for are read."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        self.identity = str(self.directory)
        self.bytes_read = 0
        self.entries: dict[str, TensorEntry] = {}
        files = [
            str(p.relative_to(self.directory))
            for p in self.directory.rglob("*.safetensors*")
            if p.is_file() and len(p.relative_to(self.directory).parts) <= 2
        ]
        found = weight_files(files)
        if not found:
            raise AdapterError(
                f"base model {directory}: no model.safetensors (or its index) in it",
                hint="pass a directory saved with save_pretrained(safe_serialization=True)",
            )
        for comp, (first,) in found.items():
            at = f"{comp}/" if comp else ""
            shards = [first]
            if first.endswith(".index.json"):
                try:
                    index = json.loads((self.directory / first).read_text())
                except (OSError, ValueError) as exc:
                    raise AdapterError(f"base model {directory}: {first}: {exc}") from None
                shards = shards_of_index(index, at, f"{directory}/{first}")
            for shard in shards:
                self._add(comp, shard)

    def _add(self, comp: str, shard: str) -> None:
        where = f"{self.directory.name}/{shard}"
        try:
            with open(self.directory / shard, "rb") as f:
                n = header_length(f.read(8), where)
                raw = f.read(n)
        except OSError as exc:
            raise AdapterError(f"base model: cannot read {where}: {exc.strerror}") from None
        self.bytes_read += 8 + len(raw)
        try:
            header = json.loads(raw)
            assert isinstance(header, dict)
        except (ValueError, AssertionError):
            raise AdapterError(f"{where}: the safetensors header is not a JSON object") from None
        for name, entry in entries_from_header(header, shard, 8 + n, where).items():
            self.entries[qualified(comp, name)] = entry

    def read(self, entry: TensorEntry) -> bytes:
        """The entry's bytes, by seek and read."""
        with open(self.directory / entry.file, "rb") as f:
            f.seek(entry.begin)
            raw = f.read(entry.nbytes)
        self.bytes_read += len(raw)
        return raw


@dataclass(frozen=True)
class Mapped:
    """Where an adapter module's base weight is: a tensor, and the expert slice if any."""

    tensor: str
    expert: int | None = None


def _kohya_table(names: set[str]) -> dict[str, str]:
    table: dict[str, str] = {}
    for full in names:
        comp, _, name = full.rpartition("/")
        if not name.endswith(".weight"):
            continue
        stem = name[: -len(".weight")].replace(".", "_")
        for prefix, component in _KOHYA_PREFIX.items():
            if component == comp:
                table[f"{prefix}{stem}"] = full
    return table


def map_modules(modules: list[str], names: set[str]) -> tuple[dict[str, Mapped], list[str]]:
    """Each adapter module's base tensor (see the module docstring), and the modules that could
    not be mapped, in order."""
    mapped: dict[str, Mapped] = {}
    missing: list[str] = []
    kohya: dict[str, str] | None = None
    for module in modules:
        found: Mapped | None = None
        expert = _EXPERT.match(module)
        if expert:
            param = expert.group("param")
            for cand in (param, *_wrapper_variants(param)):
                if cand in names:
                    found = Mapped(cand, int(expert.group("e")))
                    break
        elif module.startswith("lora_"):
            if kohya is None:
                kohya = _kohya_table(names)
            hit = kohya.get(module)
            found = Mapped(hit) if hit else None
        else:
            comp, _, rest = module.partition(".")
            if comp in COMPONENTS[1:] and f"{comp}/{rest}.weight" in names:
                found = Mapped(f"{comp}/{rest}.weight")
            else:
                for cand in (module, *_wrapper_variants(module)):
                    if f"{cand}.weight" in names:
                        found = Mapped(f"{cand}.weight")
                        break
        if found is None:
            missing.append(module)
        else:
            mapped[module] = found
    return mapped, missing


def _wrapper_variants(name: str) -> list[str]:
    """``bert.encoder.x`` <-> ``encoder.x``, ``model.x`` <-> ``x``: an adapter of a task model
    (or a causal LM) over a checkpoint saved without (or with) the wrapper."""
    _, _, rest = name.partition(".")
    out = [rest] if rest else []
    out.append(f"model.{name}")
    return out


def base_matrix(base: BaseWeights, where: Mapped) -> np.ndarray:
    """The base weight of one module as stored; an expert's slice is read alone (its own
    byte range within the stacked tensor)."""
    entry = base.entries[where.tensor]
    if where.expert is not None:
        if len(entry.shape) != 3 or where.expert >= entry.shape[0]:
            raise AdapterError(
                f"base tensor {where.tensor} of shape {list(entry.shape)} "
                f"has no expert {where.expert}"
            )
        stride = entry.nbytes // entry.shape[0]
        begin = entry.begin + where.expert * stride
        entry = TensorEntry(entry.file, entry.dtype, entry.shape[1:], begin, begin + stride)
    return decode(base.read(entry), entry, where.tensor)
