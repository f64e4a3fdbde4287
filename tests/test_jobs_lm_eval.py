"""The lm-eval example (examples/lm-eval/gsm8k-local.yaml, its relative include_path and train
file) benched end to end with ``--executor hf-jobs`` on the Jobs stand-in
(tests/hubserver_jobs.py: each Job runs ``gradience-hub bench-cell`` as a local subprocess in a
fresh directory and HF_HOME, so it reads only what was uploaded): the record equals the local
executor's, and the scratch repo holds the config's files byte for byte.

The model is test_lm_eval's tiny random Llama, pushed to the stand-in under a repo id (the
example names a Hub model; a local model directory is refused for Jobs)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("lm_eval")
pytest.importorskip("peft")

from gradience_hub.bench.executors.hf_jobs import HFJobsExecutor
from gradience_hub.bench.protocol import run_bench
from tests.hubserver import HubServer, configure_client
from tests.hubserver_jobs import jobs_of
from tests.test_lm_eval import build_tiny_llama, train_lora

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_alice_write_token"
MODEL = "alice/tiny-llama"


@pytest.fixture(scope="module")
def jobs_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """A Hub stand-in with the Jobs API and the tiny Llama as ``alice/tiny-llama``."""
    server = HubServer()
    server.add_user("alice", TOKEN, write=True)
    server.start()
    jobs_of(server).base_env["PYTHONPATH"] = str(ROOT)  # the image's gradience-hub = this tree
    with pytest.MonkeyPatch.context() as mp:
        configure_client(mp, server, tmp_path_factory.mktemp("hf_home"))
        yield server
    jobs_of(server).shutdown()
    server.stop()
    assert not server.internal_errors, server.internal_errors


@pytest.fixture(scope="module")
def tiny(jobs_hub: HubServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls on a shared 2-core machine
    root = tmp_path_factory.mktemp("tiny")
    model, tokenizer = build_tiny_llama(root / "base")
    train_lora(model, tokenizer, root / "adapter", steps=30)
    torch.set_num_threads(threads)
    files = {p.name: p.read_bytes() for p in (root / "base").iterdir() if p.is_file()}
    jobs_hub.create_repo(MODEL, files, owner="alice")
    return {"adapter": root / "adapter"}


def _example(tmp_path: Path) -> Path:
    """examples/lm-eval copied (relative paths as shipped), the model swapped for the tiny one
    and the grid made small."""
    folder = tmp_path / "lm-eval"
    shutil.copytree(ROOT / "examples" / "lm-eval", folder)
    path = folder / "gsm8k-local.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert data["task"]["lm_eval"]["include_path"] == "tasks/"  # relative, as shipped
    assert data["task"]["train"] == "train_gsm8k.jsonl"
    data["model"] = {"name_or_path": MODEL, "type": "causal-lm"}
    data["task"]["eval_samples"] = 6
    data["train"]["eval_batch_size"] = 8
    data["compression"] = {"variants": [{"name": "same", "rank": 8}, {"name": "r1", "rank": 1}]}
    data["seeds"] = [42]
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _comparable(out: Path) -> dict[str, Any]:
    doc = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    doc.pop("created_at")
    doc.pop("environment", None)
    doc["adapter"].pop("source")
    doc["protocol"].pop("device", None)
    return doc


def test_the_lm_eval_example_benches_through_jobs_as_it_does_locally(
    jobs_hub: HubServer, tiny: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    config = _example(tmp_path)
    local_out, jobs_out = tmp_path / "local", tmp_path / "jobs"
    run_bench(str(tiny["adapter"]), config, local_out, device="cpu", progress=False)
    before = set(jobs_of(jobs_hub).jobs)
    executor = HFJobsExecutor(flavor="cpu-basic", poll_interval=0.5)
    record = run_bench(str(tiny["adapter"]), config, jobs_out, executor=executor)
    new = [jobs_of(jobs_hub).jobs[i] for i in set(jobs_of(jobs_hub).jobs) - before]
    assert new and all(job.stage == "COMPLETED" for job in new), [j.text[-2000:] for j in new]
    # The Jobs scored the same docs the same way as this machine did.
    assert _comparable(jobs_out) == _comparable(local_out)
    assert record.task.metric == "exact_match,flexible-extract"
    # Every local file the config names is in the inputs the Jobs read, byte for byte.
    state = json.loads((jobs_out / "cells" / "hf-jobs.state").read_text(encoding="utf-8"))
    uploaded = jobs_hub.files(state["scratch_repo"])
    spec = json.loads(uploaded["spec.json"])
    assert "metric" not in spec["config"]["task"]  # the Job's reader refuses it beside lm_eval
    assert spec["config"]["task"]["lm_eval"]["include_path"] == "include_path/tasks"
    tasks = config.parent / "tasks"
    for path in tasks.iterdir():
        assert uploaded[f"config/include_path/tasks/{path.name}"] == path.read_bytes()
    train = config.parent / "train_gsm8k.jsonl"
    assert spec["config"]["task"]["train"] == "train/train_gsm8k.jsonl"
    assert uploaded["config/train/train_gsm8k.jsonl"] == train.read_bytes()
