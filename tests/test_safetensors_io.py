"""adapter/safetensors_io.py against independent references: safetensors' own reader and
writer, ml_dtypes' bf16/fp8 conversions (round to nearest even), and torch's bfloat16."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from gradience_hub.adapter.safetensors_io import (
    SafetensorsFile,
    SafetensorsFormatError,
    bf16_bits,
    rewrite_metadata,
    round_to,
    widen_bits,
    write_safetensors,
)


def values() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(20_000) * np.exp(rng.uniform(-30, 30, 20_000))).astype(np.float32)
    x[:8] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, 3.4e38, -1.5]
    # exact ties between two bf16 values (the lower 16 bits 0x8000): ties go to even
    ties = (np.arange(1, 200, dtype=np.uint32) << 16 | 0x8000).view(np.float32)
    return np.concatenate([x, ties, -ties])


def test_bf16_rounding_matches_ml_dtypes_bit_for_bit() -> None:
    x = values()
    ref = x.astype(ml_dtypes.bfloat16).view(np.uint16)
    got = bf16_bits(x)
    finite = ~np.isnan(x)
    assert np.array_equal(got[finite], ref[finite])
    assert np.isnan(widen_bits(got[~finite], "BF16")).all()
    assert np.array_equal(
        widen_bits(ref, "BF16"), ref.view(ml_dtypes.bfloat16).astype(np.float32), equal_nan=True
    )


@pytest.mark.parametrize(
    ("name", "dtype"), [("F8_E4M3", ml_dtypes.float8_e4m3fn), ("F8_E5M2", ml_dtypes.float8_e5m2)]
)
def test_fp8_values_of_every_bit_pattern_match_ml_dtypes(name: str, dtype: type) -> None:
    bits = np.arange(256, dtype=np.uint8)
    ref = bits.view(dtype).astype(np.float32)
    assert np.array_equal(widen_bits(bits, name), ref, equal_nan=True)
    assert np.array_equal(round_to(ref, name), ref, equal_nan=True)


def test_reads_what_safetensors_writes_and_back(tmp_path: Path) -> None:
    x = values()[:4096].reshape(64, 64)
    tensors = {
        "a.bf16": x.astype(ml_dtypes.bfloat16),
        "b.f16": x.astype(np.float16),
        "c.f32": x,
        "d.f64": x.astype(np.float64),
        "e.fp8": np.clip(np.nan_to_num(x), -400, 400).astype(ml_dtypes.float8_e4m3fn),
        "f.alpha": np.array(8.0, dtype=ml_dtypes.bfloat16),  # 0-d, as kohya stores alpha
        "g.int": np.arange(6, dtype=np.int64).reshape(2, 3),
        "h.empty": np.zeros((0, 4), dtype=np.float32),
    }
    save_file(tensors, str(tmp_path / "ref.safetensors"), metadata={"format": "pt", "ü": "ß"})
    f = SafetensorsFile(tmp_path / "ref.safetensors")
    assert set(f.names()) == set(tensors)
    assert f.metadata() == {"format": "pt", "ü": "ß"}
    stored = {name: f.dtype(name) for name in f.names()}
    assert stored["a.bf16"] == "BF16" and stored["e.fp8"] == "F8_E4M3"
    for name, ref in tensors.items():
        got = f.get(name)
        assert got.shape == ref.shape and f.shape(name) == ref.shape
        widened = (
            ref.astype(np.float32)
            if ref.dtype.kind == "V" or "float8" in ref.dtype.name or ref.dtype.name == "bfloat16"
            else ref
        )
        assert np.array_equal(got, widened, equal_nan=True), name
    # Written back from the widened values with their stored dtypes: the same bits, read by
    # safetensors' torch loader (numpy's has no fp8).
    from safetensors.torch import load_file as load_torch

    out = tmp_path / "ours.safetensors"
    write_safetensors(out, {n: f.get(n) for n in f.names()}, stored, {"format": "pt"})
    back = load_torch(str(out))
    original = load_torch(str(tmp_path / "ref.safetensors"))
    for name in tensors:
        assert back[name].dtype == original[name].dtype, name
        assert back[name].shape == original[name].shape, name
        assert SafetensorsFile(out).raw(name).tobytes() == f.raw(name).tobytes(), name


def test_a_value_the_stored_dtype_cannot_hold_keeps_its_own_dtype(tmp_path: Path) -> None:
    """A kohya alpha that bf16 cannot hold exactly is written as float32, not rounded."""
    out = tmp_path / "o.safetensors"
    write_safetensors(
        out,
        {"x": np.array(1 / 3, dtype=np.float32), "y": np.array(0.5, np.float32)},
        {"x": "bf16", "y": "bf16"},
    )
    back = SafetensorsFile(out)
    assert (back.dtype("x"), back.dtype("y")) == ("F32", "BF16")
    assert back.get("x") == np.float32(1 / 3) and back.get("y") == 0.5


def test_rewrite_metadata_keeps_every_tensor_byte(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    save_file({"w": np.arange(10, dtype=np.float32)}, str(path), metadata={"a": "1"})
    before = load_file(str(path))["w"].tobytes()
    rewrite_metadata(path, {"a": "2", "b": json.dumps({"k": 1})})
    f = SafetensorsFile(path)
    assert f.metadata() == {"a": "2", "b": '{"k": 1}'}
    assert load_file(str(path))["w"].tobytes() == before


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"[1, 2]", "not a JSON object"),
        (b'{"x": 1}', "not an object"),
        (b'{"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}', "4 bytes for shape"),
        (b'{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 400]}}', "outside the data"),
        (b'{"x": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 4]}}', "unsupported dtype"),
        (b'{"x": {"dtype": "F32", "shape": "1", "data_offsets": [0, 4]}}', "not a list of sizes"),
        (b"[" * 100_000, "not JSON"),
        (b'{"__metadata__": {"a": 1}}', "map of strings"),
    ],
)
def test_malformed_files_are_refused_with_the_reason(
    tmp_path: Path, header: bytes, message: str
) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    with pytest.raises(SafetensorsFormatError, match=message):
        SafetensorsFile(path)


def test_a_header_longer_than_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "short.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(SafetensorsFormatError, match="exceeds the file"):
        SafetensorsFile(path)
