"""safetensors files read and written as raw bytes, without ml_dtypes.

The header names each tensor's dtype, shape and byte offsets, so a tensor is a numpy view of
the memory-mapped file, and the 16- and 8-bit floats numpy has no dtype for (bf16, fp8) are
widened to float32 exactly from their bits. ``safetensors.numpy`` hands those to numpy as
ml_dtypes types instead, and importing ml_dtypes costs 0.3 s (0.6.0) to 1.6 s (0.7.0) on a
2-core machine: more than the rest of an audit (issue 21). The format is small and fixed
(https://github.com/huggingface/safetensors#format): 8 bytes of little-endian header length,
a JSON header, then the tensors' bytes at their offsets. Files are checked as the reference
implementation checks them (offsets inside the data, sizes matching shapes).

Writing takes values plus the dtype each tensor should be stored in: bf16 is rounded to
nearest even from its float32 bits here; fp8, which compress writes back only for fp8 inputs,
goes through ml_dtypes, imported only then.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

# safetensors dtype -> numpy dtype of the stored elements
NATIVE: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
# floats numpy lacks: the storage of their bits; read as float32
WIDENED: dict[str, np.dtype[Any]] = {
    "BF16": np.dtype("<u2"),
    "F8_E4M3": np.dtype("u1"),
    "F8_E5M2": np.dtype("u1"),
}
# the reference implementation's header limit
MAX_HEADER = 100_000_000


class SafetensorsFormatError(ValueError):
    """Not a well-formed safetensors file; the message says what is wrong."""


def _fp8_table(exp_bits: int, man_bits: int, finite_only: bool) -> np.ndarray:
    """The float32 value of each of the 256 fp8 bit patterns (bias ``2**(e-1) - 1``).

    ``finite_only`` is OCP's E4M3 "fn": no infinities, only ``S.1111.111`` is NaN."""
    bias = (1 << (exp_bits - 1)) - 1
    codes = np.arange(256, dtype=np.uint32)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exp = (codes >> man_bits) & ((1 << exp_bits) - 1)
    man = codes & ((1 << man_bits) - 1)
    frac = man / float(1 << man_bits)
    values = np.where(
        exp == 0,
        sign * frac * 2.0 ** (1 - bias),
        sign * (1.0 + frac) * np.exp2(exp.astype(np.float64) - bias),
    )
    top = (1 << exp_bits) - 1
    if finite_only:
        values = np.where((exp == top) & (man == (1 << man_bits) - 1), np.nan, values)
    else:
        values = np.where((exp == top) & (man == 0), sign * np.inf, values)
        values = np.where((exp == top) & (man != 0), np.nan, values)
    return values.astype(np.float32)


_FP8_FORMATS = {"F8_E4M3": (4, 3, True), "F8_E5M2": (5, 2, False)}
_FP8_TABLES: dict[str, np.ndarray] = {}


def widen_bits(bits: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values of raw ``BF16``, ``F8_E4M3`` or ``F8_E5M2`` bits. Exact: each such value
    is a float32 (bf16 is the upper half of one)."""
    if dtype == "BF16":
        return (bits.astype(np.uint32) << 16).view(np.float32)
    table = _FP8_TABLES.get(dtype)
    if table is None:
        table = _FP8_TABLES[dtype] = _fp8_table(*_FP8_FORMATS[dtype])
    return table[bits]


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """Values rounded to bf16 (nearest, ties to even; NaN stays a quiet NaN with its sign),
    as the uint16 bits a ``BF16`` tensor stores."""
    # np.require, not ascontiguousarray: that makes a 0-d array (a kohya alpha) 1-d
    values = np.require(x, dtype=np.float32, requirements="C")
    u = values.view(np.uint32)
    out = ((u + (0x7FFF + ((u >> 16) & 1))) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        out[nan] = ((u[nan] >> 16) | 0x0040).astype(np.uint16)
    return out


def _fp8_bits(x: np.ndarray, dtype: str) -> np.ndarray:
    import ml_dtypes  # only fp8 writes pay its import

    target = ml_dtypes.float8_e4m3fn if dtype == "F8_E4M3" else ml_dtypes.float8_e5m2
    return np.require(np.asarray(x, dtype=np.float32).astype(target), requirements="C").view(
        np.uint8
    )


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """``x`` rounded to the safetensors dtype ``dtype`` (``bf16``, ``F16``, ...), as the values
    that dtype holds: bf16 and fp8 as float32 (so the math can measure what will be stored),
    the others in their own numpy dtype."""
    name = dtype.upper()
    if name == "BF16":
        return widen_bits(bf16_bits(x), name)
    if name in WIDENED:
        return widen_bits(_fp8_bits(x, name), name)
    return np.require(np.asarray(x).astype(NATIVE.get(name) or np.dtype(dtype)), requirements="C")


def representable(x: np.ndarray, dtype: str) -> bool:
    """Whether ``dtype`` stores every value of the float array ``x`` exactly (NaN as NaN)."""
    if x.dtype.kind != "f":
        return False
    if dtype in NATIVE:
        return bool(np.array_equal(x.astype(NATIVE[dtype]), x, equal_nan=True))
    values = x.astype(np.float32)
    if not np.array_equal(values, x, equal_nan=True):
        return False
    bits = bf16_bits(values) if dtype == "BF16" else _fp8_bits(values, dtype)
    return bool(np.array_equal(widen_bits(bits, dtype), values, equal_nan=True))


def dtype_name(array: np.ndarray) -> str:
    """The safetensors dtype of a numpy array (``F32`` for float32, ...)."""
    for name, storage in NATIVE.items():
        if array.dtype == storage:
            return name
    raise SafetensorsFormatError(f"numpy dtype {array.dtype} has no safetensors dtype")


class SafetensorsFile:
    """A safetensors file, mapped read-only: names, dtypes, shapes, metadata and tensors."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._map: mmap.mmap | None = None
        with open(self.path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 8:
                raise SafetensorsFormatError(f"{size} bytes: shorter than its header's length")
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > min(MAX_HEADER, size - 8):
                raise SafetensorsFormatError(f"header length {n} exceeds the file ({size} bytes)")
            try:
                header = json.loads(fh.read(n))
            except (ValueError, RecursionError) as exc:
                raise SafetensorsFormatError(f"its header is not JSON ({exc})") from None
            if size > 8 + n:
                self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        if not isinstance(header, dict):
            raise SafetensorsFormatError("its header is not a JSON object")
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
        ):
            raise SafetensorsFormatError("__metadata__ is not a map of strings to strings")
        self._metadata: dict[str, str] = meta
        self._start = 8 + n
        data_len = size - self._start
        self._entries = {name: _entry(name, spec, data_len) for name, spec in header.items()}

    def names(self) -> list[str]:
        """Tensor names in header order."""
        return list(self._entries)

    def metadata(self) -> dict[str, str]:
        """The header's ``__metadata__``."""
        return dict(self._metadata)

    def dtype(self, name: str) -> str:
        """The stored dtype as safetensors names it (``BF16``, ``F32``, ...)."""
        return self._entries[name][0]

    def shape(self, name: str) -> tuple[int, ...]:
        """The stored shape."""
        return self._entries[name][1]

    def raw(self, name: str) -> np.ndarray:
        """The stored elements in their bits' dtype: a read-only view of the file."""
        dtype, shape, begin, end = self._entries[name]
        storage = NATIVE.get(dtype) or WIDENED[dtype]
        if begin == end or self._map is None:
            return np.zeros(shape, dtype=storage)
        count = (end - begin) // storage.itemsize
        flat = np.frombuffer(self._map, dtype=storage, count=count, offset=self._start + begin)
        return flat.reshape(shape)

    def get(self, name: str) -> np.ndarray:
        """The tensor: native dtypes as stored (a view), BF16 and FP8 widened to float32."""
        dtype = self._entries[name][0]
        bits = self.raw(name)
        return widen_bits(bits, dtype) if dtype in WIDENED else bits


def _entry(name: str, spec: Any, data_len: int) -> tuple[str, tuple[int, ...], int, int]:
    if not isinstance(spec, Mapping):
        raise SafetensorsFormatError(f"{name}: its header entry is not an object")
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if not isinstance(dtype, str) or (dtype not in NATIVE and dtype not in WIDENED):
        raise SafetensorsFormatError(f"{name}: unsupported dtype {dtype!r}")
    storage = NATIVE.get(dtype) or WIDENED[dtype]
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise SafetensorsFormatError(f"{name}: shape {shape!r} is not a list of sizes")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int for o in offsets)
        or not 0 <= offsets[0] <= offsets[1] <= data_len
    ):
        raise SafetensorsFormatError(f"{name}: data_offsets {offsets!r} outside the data")
    if math.prod(shape) * storage.itemsize != offsets[1] - offsets[0]:
        raise SafetensorsFormatError(
            f"{name}: {offsets[1] - offsets[0]} bytes for shape {shape} of {dtype}"
        )
    begin, end = offsets
    return dtype, tuple(shape), int(begin), int(end)


def write_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, np.ndarray],
    stored: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``tensors`` as a safetensors file (keys sorted, as the reference writer does).

    ``stored`` names, per key, the dtype (``BF16``, ``F16``, ...) a tensor came from: a float
    array is written in it when it holds the values exactly (the compressed factors were
    rounded to it; a copied tensor came from it), else in the array's own dtype."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    blobs: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        array = np.asarray(tensors[name])
        want = (stored or {}).get(name, "").upper()
        known = want in WIDENED or want in NATIVE
        if not (known and want != "BOOL" and representable(array, want)):
            want = dtype_name(array)
        if want == "BF16":
            data = bf16_bits(array)
        elif want in WIDENED:
            data = _fp8_bits(array, want)
        else:
            data = np.ascontiguousarray(array, dtype=NATIVE[want])
        blob = data.tobytes()
        header[name] = {
            "dtype": want,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the reference writer aligns the data to 8 bytes
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        for blob in blobs:
            fh.write(blob)


def rewrite_metadata(path: str | os.PathLike[str], metadata: Mapping[str, str]) -> None:
    """Replace the ``__metadata__`` of a safetensors file in place; every tensor's entry and
    byte stays as it was (the data is copied, not decoded)."""
    source = SafetensorsFile(path)
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    for name, (dtype, shape, begin, end) in source._entries.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}
    data = bytes(source._map[source._start :]) if source._map is not None else b""
    if source._map is not None:
        source._map.close()
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        fh.write(data)
