"""``merge-audit --merge OUT``: write the merged adapter with peft's ``add_weighted_adapter``, then
measure how much of each source the written adapter retains, next to the prediction.

Needs the ``bench`` extra (torch, peft, transformers), imported only inside :func:`merge`. peft
needs a model to hold the adapters: its skeleton is built from the base model's
``config.json`` (``--base-model PATH`` or the adapters' ``base_model_name_or_path``, read with
``local_files_only=True``) on the meta device, and only the modules the adapters target get real
(uninitialised) storage, so even a 7B base costs a few MB. The base weights never matter: only
the LoRA factors are merged and saved.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradience_hub.adapter import Adapter, SourceInfo, open_adapter
from gradience_hub.errors import AdapterError, UsageError
from gradience_hub.merge_audit.geometry import retained, update
from gradience_hub.merge_audit.predict import METHODS, PREDICTED, merged_update
from gradience_hub.merge_audit.report import MergeAuditReport, weighted_mean

# adapter_config.json task_type -> the transformers auto class whose module names the adapter's
# keys use (a CAUSAL_LM adapter names "model.layers..." of LlamaForCausalLM, not LlamaModel).
_AUTO_CLASSES = {
    "CAUSAL_LM": "AutoModelForCausalLM",
    "SEQ_CLS": "AutoModelForSequenceClassification",
    "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
    "TOKEN_CLS": "AutoModelForTokenClassification",
    "QUESTION_ANS": "AutoModelForQuestionAnswering",
}
MERGED = "merged"


def check_merge_options(method: str, density: float, opened: Sequence[tuple[Adapter, Any]]) -> None:
    """Refuse what peft would refuse, before any heavy import: an unknown method, unequal ranks
    for linear/ties, a density outside (0, 1]."""
    if method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if not 0.0 < density <= 1.0:
        raise UsageError(f"--density must be in (0, 1], got {density}", hint="e.g. --density 0.5")
    if method in ("linear", "ties"):
        ranks = {max([a.config.r, *a.config.rank_pattern.values()]) for a, _ in opened}
        if len(ranks) != 1:
            raise UsageError(
                f"--method {method} needs adapters of one rank, got r={sorted(ranks)}",
                hint="use --method cat or svd for adapters of different ranks",
            )


def _check_output(output: Path, sources: Sequence[Adapter]) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise UsageError(
            f"--merge {output} exists and is not an empty directory",
            hint="choose a new directory for the merged adapter",
        )
    for adapter in sources:
        src = adapter.directory.resolve()
        if output.resolve() == src or output.resolve() in src.parents:
            raise UsageError(f"--merge {output} would overwrite a source adapter")


def build_skeleton(base_model: str, task_type: str | None, modules: Sequence[str]) -> Any:
    """The base model on the meta device, with real storage only for ``modules``."""
    import torch
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(base_model, local_files_only=True)
    except Exception as exc:  # OSError / ValueError from transformers: no local config
        raise AdapterError(
            f"cannot read the base model config of {base_model!r} locally: "
            f"{str(exc).splitlines()[0]}",
            hint="pass --base-model PATH (a directory with the base model's config.json)",
        ) from None
    auto = getattr(transformers, _AUTO_CLASSES.get(str(task_type), "AutoModel"))
    with torch.device("meta"):
        model = auto.from_config(config)
    for name in modules:
        try:
            model.get_submodule(name).to_empty(device="cpu")
        except AttributeError:
            raise AdapterError(
                f"the base model {base_model!r} has no module {name}",
                hint="pass the adapters' own base model with --base-model PATH",
            ) from None
    return model


def _peft_merge(
    opened: Sequence[tuple[Adapter, SourceInfo]],
    labels: Sequence[str],
    weights: Sequence[float],
    method: str,
    density: float,
    base_model: str,
    tmp: Path,
) -> tuple[Path, list[str]]:
    """peft's merge written to ``tmp``; returns the merged adapter's directory and what the
    libraries warned about, as report warnings (:func:`report_warnings`)."""
    # torch, peft and transformers warn on stderr about the skeleton (meta parameters, missing
    # keys) and their own deprecations. They are recorded for this block only (the process's
    # filters are restored on exit) and turned into our own words: one error line when the
    # merge fails, report warnings when it succeeds.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            _peft_merge_calls(opened, labels, weights, method, density, base_model, tmp)
        except (ValueError, KeyError, RuntimeError, TypeError) as exc:
            missing = _missing_keys(caught)
            hint = (
                f"peft expects factors ({missing}) that an adapter's weights file does not "
                "hold; fix target_modules in its adapter_config.json"
                if missing
                else "check that every adapter loads on this base model with peft"
            )
            raise AdapterError(
                f"peft could not merge the adapters ({method}): {first_problem(exc)}", hint=hint
            ) from None
    return tmp / MERGED, report_warnings(caught)


def _peft_merge_calls(
    opened: Sequence[tuple[Adapter, SourceInfo]],
    labels: Sequence[str],
    weights: Sequence[float],
    method: str,
    density: float,
    base_model: str,
    tmp: Path,
) -> None:
    from peft import PeftModel

    first = opened[0][0]
    modules = list(dict.fromkeys(m for a, _ in opened for m in a.module_names))
    model = build_skeleton(base_model, first.config.raw.get("task_type"), modules)
    peft_model = PeftModel.from_pretrained(model, str(first.directory), adapter_name=labels[0])
    for (adapter, _), label in zip(opened[1:], labels[1:], strict=True):
        peft_model.load_adapter(str(adapter.directory), adapter_name=label)
    kwargs: dict[str, Any] = {"density": density} if method == "ties" else {}
    peft_model.add_weighted_adapter(
        list(labels), list(weights), MERGED, combination_type=method, **kwargs
    )
    peft_model.save_pretrained(str(tmp), selected_adapters=[MERGED])


def first_problem(exc: BaseException, limit: int = 300) -> str:
    """One line for a library exception: its first line, or, for a list such as torch's
    "Error(s) in loading state_dict ...:" and one "size mismatch for ..." per tensor, the first
    entry and how many follow."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0]
    if text.endswith(":") and len(lines) > 1:
        text = lines[1] + (f" (and {len(lines) - 2} more)" if len(lines) > 2 else "")
    return text[:limit]


# torch's Module._load_from_state_dict for a key whose parameter is on the meta device
_META_NO_OP = re.compile(r"^for (?P<key>\S+): copying from a non-meta parameter", re.DOTALL)
# peft's PeftModel.load_adapter when the model has LoRA layers the file has no tensors for
_MISSING = re.compile(r"Found missing adapter keys while loading the checkpoint: \[(?P<keys>.*)\]")


def _missing_keys(caught: Sequence[warnings.WarningMessage]) -> str | None:
    """The first module peft expected factors for but the file lacked, and how many more."""
    for record in caught:
        found = _MISSING.search(str(record.message))
        if found:
            keys = [k.strip(" '\"") for k in found.group("keys").split(",") if k.strip()]
            if keys:
                more = f" and {len(keys) - 1} more" if len(keys) > 1 else ""
                return f"{keys[0]}{more}"
    return None


def report_warnings(caught: Sequence[warnings.WarningMessage]) -> list[str]:
    """What the libraries warned about that concerns the user's adapters, in our words.

    A tensor torch could not copy onto the meta skeleton is a full weight in an adapter file
    (``modules_to_save``): only LoRA factors are merged, so the merged adapter lacks it.
    Library deprecations (FutureWarning, DeprecationWarning) concern nobody running the CLI.
    """
    out: list[str] = []
    for record in caught:
        if issubclass(record.category, (FutureWarning, DeprecationWarning)):
            continue
        text = str(record.message)
        meta = _META_NO_OP.match(text)
        if meta:
            line = (
                f"the merged adapter does not carry {meta.group('key')}: it is not a LoRA "
                "factor (a modules_to_save or other full weight) and only LoRA factors are merged"
            )
        else:
            line = f"peft: {first_problem(Exception(text), 200)}"
        if line not in out:
            out.append(line)
    return out


def measure(
    opened: Sequence[tuple[Adapter, SourceInfo]],
    labels: Sequence[str],
    weights: Sequence[float],
    method: str,
    merged: Adapter,
    energy: float,
) -> dict[str, Any]:
    """Per source: its retained fraction in the written adapter (measured), in peft's update
    predicted from the factors, and in the linear merge of the updates; per module, and
    Frobenius-weighted over the modules by the source's ``||dW||_F``."""
    rows = []
    keys = ("measured", "predicted", "linear_merge")
    seen: dict[str, dict[str, list[tuple[float | None, float]]]] = {
        label: {key: [] for key in keys} for label in labels
    }
    for name in merged.module_names:
        have = [
            (label, adapter.module(name), w)
            for label, (adapter, _), w in zip(labels, opened, weights, strict=True)
            if name in adapter.pairs
        ]
        m = merged.module(name)
        got = update(m.B, m.A, m.scale, energy)
        factors = [(mod.B, mod.A, mod.scale) for _, mod, _ in have]
        ws = [w for _, _, w in have]
        predicted = merged_update(method, factors, ws, energy)
        linear = merged_update("cat", factors, ws, energy)
        row: dict[str, Any] = {"name": name}
        for label, mod, _ in have:
            src = update(mod.B, mod.A, mod.scale, energy)
            values = {
                "measured": retained(src, got),
                "predicted": retained(src, predicted) if predicted is not None else None,
                "linear_merge": retained(src, linear) if linear is not None else None,
            }
            row[label] = values
            for key in keys:
                seen[label][key].append((values[key], src.norm))
        rows.append(row)
    sources = [
        {"label": label, **{f"retained_{k}": weighted_mean(seen[label][k]) for k in keys}}
        for label in labels
    ]
    return {"sources": sources, "modules": rows}


def merge(
    report: MergeAuditReport,
    opened: Sequence[tuple[Adapter, SourceInfo]],
    output: str | os.PathLike[str],
    method: str = "cat",
    density: float = 0.5,
    base_model: str | None = None,
) -> dict[str, Any]:
    """Write the merged adapter to ``output`` (whole or not at all) and return merge_audit.json's
    ``merge`` entry; also sets ``report.merge``."""
    from gradience_hub.bench.train import require_bench_extra

    check_merge_options(method, density, opened)
    out = Path(output)
    _check_output(out, [a for a, _ in opened])
    base = base_model or report.base_model
    if not base:
        raise UsageError("the adapters do not name their base model", hint="pass --base-model PATH")
    require_bench_extra()
    labels = [s["label"] for s in report.sources]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        written, notes = _peft_merge(
            opened, labels, report.weights, method, density, base, Path(tmp)
        )
        merged = open_adapter(written)
        measured = measure(opened, labels, report.weights, method, merged, report.energy_threshold)
        if out.exists():
            out.rmdir()  # empty (checked above): replaced atomically below
        os.replace(written, out)
    note = {
        "linear": "peft's linear averages the factors (cross terms B_i A_j included), so it "
        "differs from the linear merge of the updates unless the adapters are identical",
        "svd": "svd is the linear merge of the updates truncated to the largest source rank",
        "cat": "cat writes the linear merge of the updates exactly",
        "ties": "ties prunes and sign-elects factor entries: no prediction from the geometry",
    }[method]
    entry = {
        "method": method,
        "output": str(out),
        "base_model": base,
        "density": density if method == "ties" else None,
        "predicted": method in PREDICTED,
        "note": note,
        **measured,
    }
    report.merge = entry
    report.warnings.extend(notes)
    return entry
