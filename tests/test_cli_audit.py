"""`gradience-hub audit` end to end: output shapes, and every bad input as a user meets it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gradience_hub.cli import main
from tests.factories import llama_like_adapter, lora_config, planted_factors, write_adapter


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the console entry point in process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_text_json_and_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = llama_like_adapter(tmp_path / "a")
    code, out, err = run_cli(["audit", str(directory)], capsys)
    assert code == 0 and err == ""
    assert out.startswith("GRADIENCE LoRA AUDIT\n")
    code, out, _ = run_cli(["audit", str(directory), "--json"], capsys)
    assert code == 0
    data = json.loads(out)  # stdout is audit.json and nothing else
    assert data["summary"]["n_layers"] == 8
    target = tmp_path / "audit.json"
    code, out, _ = run_cli(["audit", str(directory), "--output", str(target), "--layers"], capsys)
    assert code == 0 and "Layers:\n" in out
    assert json.loads(target.read_text())["summary"] == data["summary"]


def _corrupt(tmp_path: Path) -> Path:
    directory = llama_like_adapter(tmp_path / "c")
    weights = directory / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    return directory


def _not_lora(tmp_path: Path) -> Path:
    directory = llama_like_adapter(tmp_path / "n")
    (directory / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING"}))
    return directory


def _a_without_b(tmp_path: Path) -> Path:
    from safetensors.numpy import save_file

    directory = tmp_path / "ab"
    directory.mkdir()
    save_file(
        {"base_model.model.m.q_proj.lora_A.weight": np.ones((2, 4), np.float32)},
        str(directory / "adapter_model.safetensors"),
    )
    (directory / "adapter_config.json").write_text(json.dumps(lora_config(r=2)))
    return directory


def _no_chain(tmp_path: Path) -> Path:
    B, _ = planted_factors(8, 8, 4)
    _, A = planted_factors(8, 8, 3)
    return write_adapter(tmp_path / "chain", {"m.q_proj": (B, A)}, lora_config(r=4))


def _nan(tmp_path: Path) -> Path:
    B, A = planted_factors(8, 8, 4)
    B[0, 0] = np.nan
    return write_adapter(tmp_path / "nan", {"m.q_proj": (B, A)}, lora_config(r=4))


def _inf(tmp_path: Path) -> Path:
    B, A = planted_factors(8, 8, 4)
    A[1, 1] = np.inf
    return write_adapter(tmp_path / "inf", {"m.q_proj": (B, A)}, lora_config(r=4))


def _ambiguous(tmp_path: Path) -> Path:
    B, A = planted_factors(8, 8, 4)
    for name in ("one", "two"):
        write_adapter(tmp_path / "multi" / name, {"m.q_proj": (B, A)}, lora_config(r=4))
    return tmp_path / "multi"


def _no_weights(tmp_path: Path) -> Path:
    directory = tmp_path / "nw"
    directory.mkdir()
    (directory / "adapter_config.json").write_text(json.dumps(lora_config()))
    return directory


def _no_config(tmp_path: Path) -> Path:
    directory = llama_like_adapter(tmp_path / "nc")
    (directory / "adapter_config.json").unlink()
    return directory


def _config_value(key: str, raw_json: str):  # type: ignore[no-untyped-def]
    """A maker whose adapter_config.json has ``key`` set to the raw JSON text ``raw_json``
    (JSON's NaN/Infinity and 1e400 cannot be written by json.dumps of a dict value)."""

    def make(tmp_path: Path) -> Path:
        directory = llama_like_adapter(tmp_path / f"cfg-{key}")
        text = json.dumps({**lora_config(r=8), key: "@@"}).replace('"@@"', raw_json)
        (directory / "adapter_config.json").write_text(text)
        return directory

    return make


def _factor_dtype(dtype: str, shape_a: tuple[int, int] = (4, 8)):  # type: ignore[no-untyped-def]
    def make(tmp_path: Path) -> Path:
        from safetensors.numpy import save_file

        directory = tmp_path / f"dt-{dtype}-{shape_a[1]}"
        directory.mkdir()
        save_file(
            {
                "base_model.model.m.q_proj.lora_A.weight": np.ones(shape_a, dtype),
                "base_model.model.m.q_proj.lora_B.weight": np.ones((8, shape_a[0]), dtype),
            },
            str(directory / "adapter_model.safetensors"),
        )
        (directory / "adapter_config.json").write_text(json.dumps(lora_config(r=shape_a[0])))
        return directory

    return make


def _redos(tmp_path: Path) -> Path:
    """Issue 9 item 8: PEFT's pattern rule on an untrusted key that backtracks exponentially."""
    name = "model.layers.0." + "a" * 40 + "!"
    B, A = planted_factors(8, 8, 4)
    config = lora_config(r=4, rank_pattern={"model.layers.0.q_proj": 2, "(a|aa)+$x": 2})
    return write_adapter(tmp_path / "redos", {name: (B, A)}, config)


BAD_INPUTS = {
    "ReDoS rank_pattern": (_redos, "regex does not finish"),
    "int64 factors": (_factor_dtype("int64"), "dtype int64; LoRA factors must be floating point"),
    "bool factors": (_factor_dtype("bool"), "dtype bool; LoRA factors must be floating point"),
    "zero-size factors": (_factor_dtype("float32", (4, 0)), "shape (4, 0) with no elements"),
    "lora_alpha NaN": (_config_value("lora_alpha", "NaN"), "lora_alpha = nan; it must be a finite"),
    "lora_alpha Infinity": (_config_value("lora_alpha", "Infinity"), "lora_alpha = inf"),
    "r 1e400": (_config_value("r", "1e400"), "r = inf; it must be a positive integer"),
    "r true": (_config_value("r", "true"), "r = True; it must be a positive integer"),
    "r 8.5": (_config_value("r", "8.5"), "r = 8.5; it must be a positive integer"),
    "huge alpha": (_config_value("lora_alpha", "1e308"), "overflows float64"),
    "huge alpha 1e200": (_config_value("lora_alpha", "1e200"), "overflows float64"),
    "missing directory": (lambda p: p / "does-not-exist", "no such local directory or file"),
    "no adapter_config.json": (_no_config, "no adapter_config.json"),
    "no weights": (_no_weights, "no adapter weights"),
    "truncated safetensors": (_corrupt, "not a readable safetensors file"),
    "not LoRA": (_not_lora, "only LoRA adapters"),
    "lora_A without lora_B": (_a_without_b, "has lora_A but no lora_B"),
    "shapes do not chain": (_no_chain, "shapes do not chain"),
    "NaN": (_nan, "NaN or Inf"),
    "Inf": (_inf, "NaN or Inf"),
    "ambiguous multi-adapter": (_ambiguous, "several adapters: one, two"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_exit_2_with_one_message(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, message = BAD_INPUTS[case]
    source = make(tmp_path)
    code, out, err = run_cli(["audit", str(source)], capsys)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 2
    assert lines[0].startswith("Error: ") and message in lines[0]
    assert "Traceback" not in err


def test_bad_numbers_print_nothing_on_stdout_with_json(tmp_path: Path) -> None:
    """A real process: an update that overflows float64 never reaches LAPACK (which would print
    "On entry to ..." to stdout inside --json): exit 2, stdout empty, one error line."""
    directory = _config_value("lora_alpha", "1e308")(tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("GRADIENCE_DEBUG", None)
    cmd = [sys.executable, "-m", "gradience_hub", "audit", str(directory), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=60)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.startswith("Error: module model.layers.0.self_attn.q_proj: the scaled")


def test_audit_json_is_strict_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Tiny but finite factors (1e-30) are audited; audit.json never holds NaN or Infinity."""
    B, A = planted_factors(8, 8, 4)
    directory = write_adapter(tmp_path / "tiny", {"m.q_proj": (B * 1e-30, A)}, lora_config(r=4))
    code, out, _ = run_cli(["audit", str(directory), "--json"], capsys)
    assert code == 0
    data = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    S = np.linalg.svd(
        4.0
        * (B * 1e-30).astype(np.float32).astype(np.float64)
        @ A.astype(np.float32).astype(np.float64),
        compute_uv=False,
    )[:4]
    got = np.array(data["layers"][0]["singular_values"])
    assert np.allclose(got, S, rtol=1e-9, atol=0)


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = llama_like_adapter(tmp_path / "a")
    code, _, err = run_cli(["audit", str(directory), "--energy", "2"], capsys)
    assert code == 2 and "--energy must be in (0, 1]" in err
    code, _, err = run_cli(["audit"], capsys)
    assert code == 2 and "Missing argument" in err


def test_subprocess_no_traceback_and_debug(tmp_path: Path) -> None:
    """As a user runs it: a real process, exit 2, no traceback; GRADIENCE_DEBUG shows it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("GRADIENCE_DEBUG", None)
    cmd = [sys.executable, "-m", "gradience_hub", "audit", str(_nan(tmp_path))]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "NaN or Inf" in proc.stderr
    proc = subprocess.run(
        cmd, capture_output=True, text=True, check=False, env={**env, "GRADIENCE_DEBUG": "1"}
    )
    assert "Traceback" in proc.stderr
    assert proc.returncode == 2  # the debug switch shows the traceback, not another exit code


@pytest.mark.parametrize("debug", ["", "1"])
def test_internal_error_exits_70(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], debug: str
) -> None:
    """A bug is exit 70 (EX_SOFTWARE) with a request to report it, never 2 (bad input)."""
    import gradience_hub.audit

    def bug(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("planted bug")

    monkeypatch.setattr(gradience_hub.audit, "run_audit", bug)
    monkeypatch.setenv("GRADIENCE_DEBUG", debug)
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", str(tmp_path)])
    assert exit_info.value.code == 70
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError: planted bug" in err
    assert "please report it" in err
    assert ("Traceback" in err) == bool(debug)


def test_audit_does_not_import_torch_or_hub(tmp_path: Path) -> None:
    """The audit path is numpy-only: a local audit of a bf16 adapter in a fresh process never
    imports torch or huggingface_hub (and reads bf16 without the test having imported
    ml_dtypes for it)."""
    import ml_dtypes

    B, A = planted_factors(64, 32, 8, seed=4)
    directory = write_adapter(
        tmp_path / "bf16",
        {"model.layers.0.self_attn.q_proj": (B, A)},
        lora_config(r=8),
        dtype=ml_dtypes.bfloat16,
    )
    code = (
        "import sys; from gradience_hub.cli import main\n"
        "try:\n    main(['audit', sys.argv[1], '--json'])\nexcept SystemExit:\n    pass\n"
        "heavy = ('torch', 'huggingface_hub', 'transformers', 'peft')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "print('IMPORTED', bad, file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(directory)], capture_output=True, text=True, check=True
    )
    assert "IMPORTED []" in proc.stderr
    assert json.loads(proc.stdout)["layers"][0]["dtype"] == "bfloat16"
