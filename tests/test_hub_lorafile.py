"""Hub repos of kohya / diffusers LoRA files (no adapter_config.json): only the LoRA weight file
is downloaded, chosen from the repo's file listing, never a base model's files (issue 11
item 3). The real huggingface_hub client against tests/hubserver.py."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save, save_file

from gradience_hub.audit import run_audit
from gradience_hub.compress import compress
from gradience_hub.errors import AdapterError
from gradience_hub.hub import download as hub_module


def _kohya_bytes(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    name = "lora_unet_down_blocks_0_attentions_0_proj_in"
    return save(
        {
            f"{name}.lora_down.weight": rng.standard_normal((4, 32)).astype(np.float32),
            f"{name}.lora_up.weight": rng.standard_normal((16, 4)).astype(np.float32),
            f"{name}.alpha": np.array(2.0, dtype=np.float32),
        }
    )


def _base_bytes() -> bytes:
    return save({"conv_in.weight": np.ones((2, 2), np.float32)})


def _requested(hub, name: str) -> list:  # type: ignore[no-untyped-def]
    return hub.requests_to(rf"/resolve/[^/]+/{name}$", method="GET")


def test_kohya_repo_downloads_only_the_lora_file(
    hub_client_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = hub_client_env
    lora = _kohya_bytes(0)
    monkeypatch.setattr(hub_module, "MAX_LORA_FILE_BYTES", len(lora) + 10)
    hub.create_repo(
        "org/style-lora",
        {
            "README.md": "---\nbase_model: org/sdxl\n---\n# a style\n",
            "my_style.safetensors": lora,
            "aaa_embeddings.safetensors": _base_bytes(),  # listed first, not LoRA by its keys
            "a_big_lora.safetensors": lora + b" " * 64,  # over the size limit
            "diffusion_pytorch_model.safetensors": _base_bytes(),
            "model-00001-of-00002.safetensors": _base_bytes(),
            "unet/my_style.safetensors": lora,  # not top level
        },
    )
    report = run_audit("org/style-lora")
    assert report.summary.adapter_format == "kohya"
    local = tmp_path / "my_style.safetensors"
    local.write_bytes(lora)
    assert [r.singular_values for r in report.layers] == [
        r.singular_values for r in run_audit(str(local)).layers
    ]
    assert len(_requested(hub, "my_style.safetensors")) >= 1
    # the non-LoRA file was only probed for its header, with a Range request
    probes = _requested(hub, "aaa_embeddings.safetensors")
    assert probes and all("range" in p.headers for p in probes)
    for never in (
        "a_big_lora.safetensors",
        "diffusion_pytorch_model.safetensors",
        "model-00001-of-00002.safetensors",
        "unet/my_style.safetensors",
    ):
        assert not hub.requests_to(rf"/resolve/[^/]+/{never}$"), never
    # compress reads the same download and writes kohya
    result = compress("org/style-lora", tmp_path / "out", rank=2)
    assert (tmp_path / "out" / "my_style.safetensors").is_file()
    assert [m.r_new for m in result.modules] == [2]


def test_diffusers_repo_takes_pytorch_lora_weights_by_name(hub_client_env, tmp_path: Path) -> None:
    hub = hub_client_env
    rng = np.random.default_rng(1)
    key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    path = tmp_path / "w.safetensors"
    save_file(
        {
            f"{key}.lora_A.weight": rng.standard_normal((4, 32)).astype(np.float32),
            f"{key}.lora_B.weight": rng.standard_normal((32, 4)).astype(np.float32),
        },
        str(path),
    )
    hub.create_repo(
        "org/diffusers-lora",
        {
            "pytorch_lora_weights.safetensors": path.read_bytes(),
            "checkpoint-500.safetensors": _kohya_bytes(2),
        },
    )
    report = run_audit("org/diffusers-lora")
    assert report.summary.adapter_format == "diffusers"
    assert _requested(hub, "pytorch_lora_weights.safetensors")
    assert not hub.requests_to(r"/resolve/[^/]+/checkpoint-500\.safetensors$")


def test_repo_without_any_lora_file_is_exit_2(hub_client_env) -> None:
    hub = hub_client_env
    buf = io.BytesIO(b"not a safetensors file at all")
    hub.create_repo(
        "org/base", {"notes.safetensors": buf.getvalue(), "model.safetensors": _base_bytes()}
    )
    with pytest.raises(AdapterError, match=r"no adapter_config\.json and no kohya/diffusers LoRA"):
        run_audit("org/base")
    assert not hub.requests_to(r"/resolve/[^/]+/model\.safetensors$")


def test_annotate_a_kohya_repo_keeps_its_card_and_claims_no_peft(hub_client_env) -> None:
    """annotate works on a kohya LoRA repo: one PR whose card keeps the author's base_model and
    gets no `library_name: peft` (a kohya file is not a PEFT adapter)."""
    from gradience_hub.publish import annotate as ann

    hub = hub_client_env
    hub.create_repo(
        "org/kohya-style",
        {
            "README.md": "---\nbase_model: org/sdxl\n---\n# a style\n",
            "my_style.safetensors": _kohya_bytes(3),
        },
    )
    result = ann.annotate("org/kohya-style")
    assert result.changed and result.pr_url
    (pr,) = hub.prs("org/kohya-style")
    card = hub.read("org/kohya-style", "README.md", revision=pr.ref).decode()
    front = card.split("---")[1]
    assert "library_name" not in front and "base_model: org/sdxl" in front
    audit = hub.read("org/kohya-style", "gradience/audit.json", revision=pr.ref)
    assert audit is not None and b'"adapter_format": "kohya"' in audit


def test_library_name_follows_the_adapter_format() -> None:
    from gradience_hub.publish.readme import library_for, splice_readme

    assert [library_for(f) for f in ("peft", "diffusers", "kohya", None)] == [
        "peft",
        "diffusers",
        None,
        "peft",
    ]
    card = splice_readme("# x\n", "section", base_model=None, library_name="diffusers")
    assert card.startswith("---\nlibrary_name: diffusers\n")
    declared = "---\nlibrary_name: diffusers\n---\n# x\n"
    spliced = splice_readme(declared, "s", base_model=None)  # a declared library is kept
    assert spliced.count("library_name") == 1 and "peft" not in spliced


# --------------------------------------------------------------------------- issue 19 items 7, 10


def _raw_safetensors(header: bytes) -> bytes:
    """Bytes in safetensors' framing (8-byte little-endian length, then the header) whatever the
    header says, padded past MIN_LORA_FILE_BYTES so the size filter keeps the file."""
    import struct

    return struct.pack("<Q", len(header)) + header + b" " * 64


def _audit_cli(source: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from gradience_hub.cli import main

    with pytest.raises(SystemExit) as info:
        main(["audit", source, "--json"])
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


@pytest.mark.parametrize(
    "header",
    [
        b'{"x": 1}',
        b"[]",
        b"null",
        b'{"t": {"dtype": "F32", "shape": [1], "data_offsets": 5}}',
        b'{"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, ' + b"9" * 5000 + b"]}}",
        b"[" * 100_000 + b"]" * 100_000,
        b"not json at all",
    ],
    ids=["object-of-int", "list", "null", "int-offsets", "huge-int", "deep", "not-json"],
)
def test_odd_header_beside_a_lora_file_is_skipped_with_a_warning(
    header: bytes, hub_client_env, capsys: pytest.CaptureFixture[str]
) -> None:
    """A probed .safetensors whose header is valid JSON of another shape made huggingface_hub's
    parser raise TypeError/AttributeError (exit 70); a file we only sniff never fails the run."""
    hub = hub_client_env
    hub.create_repo(
        "org/odd",
        {"a_odd.safetensors": _raw_safetensors(header), "b_style.safetensors": _kohya_bytes(4)},
    )
    code, out, err = _audit_cli("org/odd", capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["summary"]["adapter_format"] == "kohya"
    (warning,) = [w for w in doc["warnings"] if "a_odd.safetensors" in w]
    assert warning.startswith("skipped a_odd.safetensors: its safetensors header cannot be read")
    # it was probed, with Range requests only, and never downloaded
    probes = _requested(hub, "a_odd.safetensors")
    assert probes and all("range" in p.headers for p in probes)


def _many_files(n: int) -> dict[str, bytes]:
    embedding = save({"emb_params": np.ones((4, 8), np.float32)})
    return {f"embedding_{i:04d}.safetensors": embedding for i in range(n)}


def test_one_lora_among_thousands_of_files_costs_a_bounded_number_of_requests(
    hub_client_env, capsys: pytest.CaptureFixture[str]
) -> None:
    """3,000 non-LoRA .safetensors and one LoRA file made 3,008 Hub requests (a header read per
    file); a LoRA-like name is probed first and the audit costs a handful of requests."""
    hub = hub_client_env
    hub.create_repo("org/crowded", {**_many_files(3000), "style_LoRA.safetensors": _kohya_bytes(5)})
    hub.clear_requests()
    code, out, err = _audit_cli("org/crowded", capsys)
    assert code == 0, err
    assert json.loads(out)["summary"]["adapter_format"] == "kohya"
    assert len(hub.requests_to(r"/resolve/[^/]+/embedding_\d+\.safetensors$")) == 0
    assert len(hub.requests_to(r".")) <= 6, [r.path for r in hub.requests_to(r".")]


def test_header_probes_stop_at_the_cap_and_say_so(
    hub_client_env, capsys: pytest.CaptureFixture[str]
) -> None:
    """When no file named like a LoRA is among thousands, at most MAX_HEADER_PROBES headers
    are read; the run is exit 2 and says how many files were left unprobed, and how to go on."""
    hub = hub_client_env
    cap = hub_module.MAX_HEADER_PROBES
    assert 1 <= cap <= 16
    hub.create_repo("org/crowded", {**_many_files(3000), "zz_style.safetensors": _kohya_bytes(6)})
    hub.clear_requests()
    code, out, err = _audit_cli("org/crowded", capsys)
    assert (code, out) == (2, ""), err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("Error: org/crowded has no adapter_config.json")
    assert f"{3001 - cap} of 3001 .safetensors files were not probed" in lines[1]
    probed = hub.requests_to(r"/resolve/[^/]+/[^/]+\.safetensors$", method="GET")
    assert len({p.path for p in probed}) == cap
    assert all("range" in p.headers for p in probed)
    # the listing, the header reads, and no download (nothing in the listing is worth one)
    assert len(hub.requests_to(r".")) <= cap + 2
    assert not hub.requests_to(r"/tree/")


def test_compress_carries_the_skipped_file_warning(hub_client_env, tmp_path: Path) -> None:
    hub = hub_client_env
    hub.create_repo(
        "org/odd",
        {"a_odd.safetensors": _raw_safetensors(b"null"), "b_style.safetensors": _kohya_bytes(4)},
    )
    result = compress("org/odd", tmp_path / "out", rank=2)
    assert (tmp_path / "out" / "b_style.safetensors").is_file()
    assert any(w.startswith("skipped a_odd.safetensors: ") for w in result.warnings)
