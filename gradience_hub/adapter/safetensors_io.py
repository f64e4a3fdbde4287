"""safetensors files read and written as raw bytes, without ml_dtypes.

The header names each tensor's dtype, shape and byte offsets, so a tensor is one positioned
read of its bytes (``os.pread``; a memory map where the OS has no pread), and the 16- and 8-bit
floats numpy has no dtype for (bf16, fp8) are
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
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
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
        # one pass: the ufunc casts to uint32 as it shifts (no uint32 copy first)
        return np.left_shift(bits, 16, dtype=np.uint32).view(np.float32)
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


def encode(x: np.ndarray, dtype: str) -> np.ndarray | None:
    """The elements the safetensors dtype ``dtype`` stores for the float array ``x`` (C order,
    in its storage dtype: bf16 and fp8 as their bits), or None when ``dtype`` cannot hold every
    value of ``x`` exactly (a NaN counts as held by a NaN)."""
    if x.dtype.kind != "f":
        return None
    if dtype in NATIVE:
        stored = np.require(x.astype(NATIVE[dtype], copy=False), requirements="C")
        held = stored.dtype == x.dtype or np.array_equal(stored, x, equal_nan=True)
        return stored if held else None
    values = np.require(x.astype(np.float32, copy=False), requirements="C")
    if values.dtype != x.dtype and not np.array_equal(values, x, equal_nan=True):
        return None
    if dtype == "BF16":
        # A float32 is a bf16 exactly when its low 16 bits are zero: one pass over the bits,
        # where rounding and comparing took three (a fifth of a 7B compress).
        u = values.view(np.uint32)
        low = (u & 0xFFFF) != 0
        if not low.any():
            return (u >> 16).astype(np.uint16)
        return bf16_bits(values) if np.isnan(values[low]).all() else None
    bits = _fp8_bits(values, dtype)
    return bits if np.array_equal(widen_bits(bits, dtype), values, equal_nan=True) else None


@dataclass(frozen=True)
class Encoded:
    """A tensor already in its stored form: ``data`` holds the elements of the safetensors
    dtype ``dtype`` (bf16 and fp8 as their bits), written as they are. Made where the values
    are computed (compress's worker threads), so the writer neither checks nor converts them
    and only the narrow copy is kept until it runs."""

    dtype: str
    data: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        """The tensor's shape."""
        return tuple(self.data.shape)

    @property
    def size(self) -> int:
        """The tensor's element count."""
        return int(self.data.size)


def stored_form(x: np.ndarray, dtype: str) -> Encoded | np.ndarray:
    """``x`` as :class:`Encoded` in ``dtype`` (``bf16``, ``F16``, ...) when that dtype holds every
    value exactly (as compress's rounded factors are), else ``x`` itself."""
    name = dtype.upper()
    known = (name in WIDENED or name in NATIVE) and name != "BOOL"
    data = encode(x, name) if known else None
    return x if data is None else Encoded(name, data)


def dtype_name(array: np.ndarray) -> str:
    """The safetensors dtype of a numpy array (``F32`` for float32, ...)."""
    for name, storage in NATIVE.items():
        if array.dtype == storage:
            return name
    raise SafetensorsFormatError(f"numpy dtype {array.dtype} has no safetensors dtype")


class SafetensorsFile:
    """A safetensors file, opened read-only: names, dtypes, shapes, metadata and tensors.

    Each tensor is read with one ``os.pread`` of its bytes (thread-safe, no shared file
    position), not through a memory map: a map's touched pages count in the process's resident
    memory until it is closed, which made the audit of a 7B adapter hold the whole 128 MiB file
    (190 MB peak RSS against 62 MB). Where the OS has no ``pread`` (Windows) the file is mapped.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._map: mmap.mmap | None = None
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            size = os.fstat(fd).st_size
            if size < 8:
                raise SafetensorsFormatError(f"{size} bytes: shorter than its header's length")
            (n,) = struct.unpack("<Q", _read_at(fd, 8, 0))
            if n > min(MAX_HEADER, size - 8):
                raise SafetensorsFormatError(f"header length {n} exceeds the file ({size} bytes)")
            try:
                header = json.loads(_read_at(fd, n, 8))
            except (ValueError, RecursionError) as exc:
                raise SafetensorsFormatError(f"its header is not JSON ({exc})") from None
            if size > 8 + n and not hasattr(os, "pread"):
                self._map = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._closer = weakref.finalize(self, _close, fd, self._map)
        if not isinstance(header, dict):
            raise SafetensorsFormatError("its header is not a JSON object")
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
        ):
            raise SafetensorsFormatError("__metadata__ is not a map of strings to strings")
        self._metadata: dict[str, str] = meta
        self._start = 8 + n
        self._data_len = size - self._start
        self._entries = {name: _entry(name, spec, self._data_len) for name, spec in header.items()}

    def close(self) -> None:
        """Close the file now (else when the object is collected)."""
        self._closer()

    def _bytes(self, begin: int, end: int) -> Any:
        """The data section's bytes ``[begin, end)``: a bytes object, or a view of the map."""
        if self._map is not None:
            return memoryview(self._map)[self._start + begin : self._start + end]
        return _read_at(self._fd, end - begin, self._start + begin)

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
        """The stored elements in their bits' dtype (a read-only array)."""
        dtype, shape, begin, end = self._entries[name]
        storage = NATIVE.get(dtype) or WIDENED[dtype]
        if begin == end:
            return np.zeros(shape, dtype=storage)
        return np.frombuffer(self._bytes(begin, end), dtype=storage).reshape(shape)

    def get(self, name: str) -> np.ndarray:
        """The tensor: native dtypes as stored (a view), BF16 and FP8 widened to float32."""
        dtype = self._entries[name][0]
        bits = self.raw(name)
        return widen_bits(bits, dtype) if dtype in WIDENED else bits


def _close(fd: int, mapped: mmap.mmap | None) -> None:
    if mapped is not None:
        mapped.close()
    os.close(fd)


def _read_at(fd: int, size: int, offset: int) -> bytes:
    """Exactly ``size`` bytes at ``offset`` (a file that shrank after it was opened is refused)."""
    if hasattr(os, "pread"):
        data = os.pread(fd, size, offset)
    else:  # Windows: only the header is read this way, before any other thread can see fd
        os.lseek(fd, offset, os.SEEK_SET)
        data = os.read(fd, size)
    if len(data) != size:
        raise SafetensorsFormatError(f"the file ended {size - len(data)} bytes early")
    return data


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
    tensors: Mapping[str, np.ndarray | Encoded],
    stored: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``tensors`` as a safetensors file (keys sorted, as the reference writer does).

    ``stored`` names, per key, the dtype (``BF16``, ``F16``, ...) a tensor came from: a float
    array is written in it when it holds the values exactly (the compressed factors were
    rounded to it; a copied tensor came from it), else in the array's own dtype. An
    :class:`Encoded` value is written as it is."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    blobs: list[np.ndarray] = []
    offset = 0
    for name in sorted(tensors):
        value = tensors[name]
        if not isinstance(value, Encoded):
            value = stored_form(np.asarray(value), (stored or {}).get(name, ""))
        if isinstance(value, Encoded):
            want, data = value.dtype, np.require(value.data, requirements="C")
        else:
            want, data = dtype_name(value), np.require(value, requirements="C")
        header[name] = {
            "dtype": want,
            "shape": list(data.shape),
            "data_offsets": [offset, offset + data.nbytes],
        }
        blobs.append(data)  # written from the array itself: no bytes copy of the whole file
        offset += data.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the reference writer aligns the data to 8 bytes
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        for blob in blobs:
            fh.write(blob.data)


def rewrite_metadata(path: str | os.PathLike[str], metadata: Mapping[str, str]) -> None:
    """Replace the ``__metadata__`` of a safetensors file in place; every tensor's entry and
    byte stays as it was (the data is copied, not decoded)."""
    source = SafetensorsFile(path)
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    for name, (dtype, shape, begin, end) in source._entries.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}
    data = bytes(source._bytes(0, source._data_len)) if source._data_len else b""
    source.close()  # before the file is rewritten (Windows cannot replace a mapped file)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        fh.write(data)
