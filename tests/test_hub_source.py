"""Auditing Hub sources: the real huggingface_hub client against the Hub-compatible server that
tests/hubserver.py starts on 127.0.0.1 (our stand-in for the Hub; see HUB_API.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gradience_hub.audit import run_audit
from gradience_hub.errors import HubError
from tests.factories import (
    adapter_files,
    llama_like_adapter,
    lora_config,
    planted_factors,
    write_adapter,
)


@pytest.fixture
def adapter_dir(tmp_path: Path) -> Path:
    return llama_like_adapter(tmp_path / "adapter", n_layers=2, d=32, r=8)


def test_main_and_revisions(hub_client_env, adapter_dir: Path, tmp_path: Path) -> None:
    hub = hub_client_env
    first = hub.create_repo("org/adapter", {**adapter_files(adapter_dir), "README.md": "# hi\n"})
    # a second commit changes the spectrum: rank 2 of 8 in every module
    spectrum = np.array([1.0, 1.0] + [0.0] * 6)
    modules = {
        f"model.layers.{i}.self_attn.q_proj": planted_factors(32, 32, 8, spectrum, seed=i)
        for i in range(2)
    }
    second_dir = write_adapter(tmp_path / "second", modules, lora_config(r=8))
    second = hub.push("org/adapter", adapter_files(second_dir))

    head = run_audit("org/adapter")
    assert head.source["sha"] == second and head.source["kind"] == "hub"
    assert head.source["display"] == f"org/adapter @ {second[:7]}"
    assert head.source["path"] is None  # no machine-specific cache path in audit.json
    assert all(row.energy_rank == 2 for row in head.layers)

    for spec, kwargs in ((f"org/adapter@{first}", {}), ("org/adapter", {"revision": first[:7]})):
        old = run_audit(spec, **kwargs)
        assert old.source["sha"] == first
        assert old.summary.n_layers == 4
    # only the adapter's files were fetched, never anything else in the repo
    hub.push("org/adapter", {"big/model.safetensors": b"x" * 1000})
    run_audit("org/adapter")
    assert not hub.requests_to(r"/resolve/.*big/model\.safetensors")


def test_private_repo_with_and_without_token(
    hub_client_env, adapter_dir: Path, monkeypatch
) -> None:
    hub = hub_client_env
    hub.create_repo("alice/private", adapter_files(adapter_dir), private=True, owner="alice")
    assert run_audit("alice/private").summary.n_layers == 4  # alice's token is set
    monkeypatch.delenv("HF_TOKEN")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(Path(hub.hf_home) / "no-token"))
    with pytest.raises(HubError) as err:
        run_audit("alice/private")
    assert err.value.exit_code == 3
    assert "not found on the Hub, or private" in err.value.message
    assert "HF_TOKEN" in (err.value.hint or "")


def test_missing_repo_revision_and_non_adapter(hub_client_env, adapter_dir: Path) -> None:
    hub = hub_client_env
    hub.create_repo("org/adapter", adapter_files(adapter_dir))
    hub.create_repo("org/full-model", {"config.json": "{}", "model.safetensors": b"123"})
    with pytest.raises(HubError, match="repository org/missing not found"):
        run_audit("org/missing")
    with pytest.raises(HubError, match="revision 'nope' not found in org/adapter"):
        run_audit("org/adapter@nope")
    from gradience_hub.errors import AdapterError

    with pytest.raises(AdapterError, match=r"has no adapter_config\.json"):
        run_audit("org/full-model")


def test_gated_repo_without_access(hub_client_env, adapter_dir: Path) -> None:
    hub = hub_client_env
    hub.create_repo("org/gated", adapter_files(adapter_dir), gated=True)
    with pytest.raises(HubError, match="gated"):
        run_audit("org/gated")


def test_hub_outage_and_offline_cache(hub_client_env, adapter_dir: Path, monkeypatch) -> None:
    hub = hub_client_env
    sha = hub.create_repo("org/adapter", adapter_files(adapter_dir))
    hub.inject("GET", r"/api/models/org/adapter", status=503, times=5)
    with pytest.raises(HubError) as err:
        run_audit("org/adapter")
    assert err.value.exit_code == 3
    hub.clear_faults()
    run_audit("org/adapter")  # fills the cache
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    offline = run_audit(f"org/adapter@{sha}")
    assert offline.source["sha"] == sha
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        run_audit("org/never-downloaded")


def test_cli_subprocess_exit_codes(hub_server, adapter_dir: Path) -> None:
    """As a user runs it: HF_ENDPOINT and HF_TOKEN in the environment of a real process."""
    sha = hub_server.create_repo("org/adapter", adapter_files(adapter_dir))
    hub_server.create_repo("alice/private", adapter_files(adapter_dir), private=True, owner="alice")
    cmd = [sys.executable, "-m", "gradience_hub", "audit"]
    ok = subprocess.run(
        [*cmd, "org/adapter", "--json"],
        capture_output=True,
        text=True,
        env=hub_server.subprocess_env(),
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["source"]["sha"] == sha
    for args, token, message in (
        (["org/missing"], None, "not found on the Hub"),
        (["alice/private"], None, "not found on the Hub, or private"),
        (["org/adapter", "--revision", "v9"], None, "revision 'v9' not found"),
    ):
        proc = subprocess.run(
            [*cmd, *args],
            capture_output=True,
            text=True,
            check=False,
            env=hub_server.subprocess_env(token=token),
        )
        assert proc.returncode == 3, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) <= 2
    private = subprocess.run(
        [*cmd, "alice/private"],
        capture_output=True,
        text=True,
        check=False,
        env=hub_server.subprocess_env(),
    )
    assert private.returncode == 0, private.stderr
    assert "hf_alice" not in private.stdout + private.stderr
