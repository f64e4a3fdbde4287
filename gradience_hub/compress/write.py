"""SVD-truncated LoRA adapters, written as valid PEFT adapters, with a reload check.

Each module's update ``dW = s * B @ A`` is replaced by its best rank-``k`` approximation
(Eckart-Young) in balanced form ``B' = Q_B U_k sqrt(S_k)``, ``A' = sqrt(S_k) V_k^T Q_A^T``
(:func:`gradience_hub.spectral.truncated_factors`: QR of the factors, never the dense product).

**How the scaling is kept exact.** PEFT multiplies ``lora_B(lora_A(x))`` by
``scaling = lora_alpha / r`` (``/ sqrt(r)`` under rsLoRA). We keep every module's *scaling* equal to
the original one and truncate the unscaled product ``B @ A``: the new config sets ``r = k`` and
``lora_alpha = s * k`` per module (``use_rslora`` false, so ``scaling = alpha / r = s``), with
``rank_pattern``/``alpha_pattern`` only for the modules that differ from the most common pair.
Folding the scale into the factors (``alpha = r``, scaling 1) would be just as exact for ``B @ A``
but wrong for everything else PEFT scales with it: ``lora_B.bias`` (``lora_bias=True``) is added
before the multiplication, so it is copied unchanged only because the scaling is unchanged. Keeping
``alpha / r`` also keeps the learning-rate semantics if someone continues training the adapter.

The output is written to a temporary sibling directory and renamed into place, so ``--output``
holds either the whole adapter or nothing. Runs on the core install (numpy, safetensors); when
torch and peft are importable the written adapter is also loaded with peft (see :func:`verify`).

This module writes the adapter (:func:`compress_adapter`, :func:`compress`); each module is
truncated by :mod:`gradience_hub.compress.truncate`, the ranks and the config are planned in
:mod:`gradience_hub.compress.plan`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gradience_hub._io import staged_directory
from gradience_hub.adapter import CONFIG_NAME, SAFETENSORS_NAME, Adapter
from gradience_hub.adapter.safetensors_io import Encoded, write_safetensors
from gradience_hub.compress import files
from gradience_hub.compress.experts import compress_experts
from gradience_hub.compress.plan import RankRule, build_config, config_number
from gradience_hub.compress.result import CompressionResult, ModuleCompression
from gradience_hub.compress.truncate import cast_to, factored, storage_dtype, truncate_module
from gradience_hub.compress.verify import (
    self_check,
    verify_with_peft,
)
from gradience_hub.errors import AdapterError, UsageError
from gradience_hub.hub.source import load_adapter
from gradience_hub.parallel import map_ordered

# --------------------------------------------------------------------------- writing


# What a previous adapter output may hold: what compress writes, plus the card and the Hub's
# attributes file a user may have added. Anything else means the directory is somebody's work.
_REPLACEABLE = frozenset(
    {
        "adapter_config.json",
        "adapter_model.safetensors",
        "adapter_model.bin",
        "README.md",
        ".gitattributes",
    }
)


def _check_output(output_dir: Path, adapter: Adapter, force: bool) -> None:
    """Refuse an ``--output`` that must not be replaced (UsageError, exit 2, nothing written).

    Never the working directory, the source or a directory that contains either; with
    ``--force`` only a previous adapter output (it holds adapter_config.json and nothing but
    adapter files) is replaced, never a project folder that happens to be named like one.
    """
    hint = "write the compressed adapter to a new directory"
    if output_dir.is_symlink():
        raise UsageError(f"--output {output_dir} is a symlink", hint=hint)
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(
            f"--output {output_dir} is a file", hint="pass a directory path for the new adapter"
        )
    out = output_dir.resolve()
    src = adapter.directory.resolve()
    cwd = Path.cwd().resolve()
    if out == src or out in src.parents:
        raise UsageError(f"--output {output_dir} would overwrite the source adapter", hint=hint)
    if out == cwd or out in cwd.parents:
        raise UsageError(
            f"--output {output_dir} is the working directory or contains it", hint=hint
        )
    if not output_dir.is_dir():
        return
    entries = sorted(p.name for p in output_dir.iterdir())
    if not entries:
        return
    if not force:
        raise UsageError(
            f"--output {output_dir} exists and is not empty",
            hint="choose a new directory, or pass --force to replace a previous adapter output",
        )
    unexpected = [
        name for name in entries if name not in _REPLACEABLE or (output_dir / name).is_dir()
    ]
    if unexpected or "adapter_config.json" not in entries:
        what = f"holds {unexpected[0]!r}" if unexpected else "has no adapter_config.json"
        raise UsageError(
            f"--output {output_dir} {what}: it is not a previous adapter output, and --force "
            "only replaces those",
            hint=hint,
        )


def check_output(output_dir: Path, adapter: Adapter, force: bool) -> None:
    """Refuse an ``--output`` that must not be replaced (the rules of every compression)."""
    _check_output(output_dir, adapter, force)


def compress_adapter(
    adapter: Adapter,
    ranks: Mapping[str, int] | RankRule,
    output_dir: str | Path,
    *,
    verify: bool | None = None,
    base_model: Any = None,
    force: bool = False,
    source: str | None = None,
    finish: Callable[[Path, CompressionResult], None] | None = None,
) -> CompressionResult:
    """Write ``adapter`` truncated to ``ranks`` in its own format (a PEFT adapter, or a kohya /
    diffusers LoRA file of the same name: :mod:`gradience_hub.compress.files`), in one pass.

    ``ranks`` maps module name -> k (modules absent from it keep their rank), or is a
    :class:`~gradience_hub.compress.plan.RankRule` that picks each module's k from the spectrum
    computed for its truncation (no separate audit pass). A module kept at its rank is copied
    bit for bit; the others get balanced truncated factors in the original dtype. Non-LoRA tensors
    (``modules_to_save`` heads, DoRA magnitudes, ``lora_B.bias``, trainable tokens) are copied
    unchanged. ``verify``: ``None`` checks with peft when torch and peft are importable, ``True``
    requires them, ``False`` skips the peft check (the numpy self-check always runs).
    ``base_model`` (a model object or a local model directory) makes the peft check load the
    adapter onto that model's module tree; without it the adapter config's
    ``base_model_name_or_path`` is used when it resolves locally. ``finish(tmp, result)`` runs on
    the finished temporary directory before it is moved into place (to stamp the weights file's
    header, say); what it raises leaves ``output_dir`` untouched.
    """
    output_dir = Path(output_dir)
    _check_request(adapter, ranks, verify)
    _check_output(output_dir, adapter, force)
    out = _truncate_all(adapter, ranks)
    header, config, weights_name = _file_layout(adapter, out)
    with staged_directory(output_dir) as tmp:
        if adapter.layout is None:
            (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        write_safetensors(tmp / weights_name, out.tensors, adapter.stored_dtypes(), header)
        out.tensors.clear()  # the written copy is the only one needed from here on
        level = _checked(tmp, adapter, out, verify=verify, base_model=base_model)
        result = CompressionResult(
            output_dir=output_dir,
            modules=out.rows,
            config=config,
            verified=level,
            source=source,
            warnings=out.warnings,
        )
        if finish is not None:
            finish(tmp, result)
    return result


def _check_request(
    adapter: Adapter, ranks: Mapping[str, int] | RankRule, verify: bool | None
) -> None:
    """Refuse rank keys that name no module and a peft check of a non-PEFT file."""
    unknown = [] if isinstance(ranks, RankRule) else sorted(set(ranks) - set(adapter.module_names))
    if unknown:
        raise UsageError(
            f"no LoRA module named {unknown[0]} in the adapter"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""),
            hint="rank keys are module names without the base_model.model. prefix",
        )
    if adapter.layout is not None and verify:
        raise UsageError(
            f"the peft reload check is for PEFT adapters; a {adapter.format} file is checked "
            "by re-reading it with its format's scale rule",
            hint="drop --verify peft for kohya/diffusers LoRA files",
        )


@dataclass
class _Outputs:
    """Everything the truncation produced: the file's tensors, the report rows, the new rank
    and alpha per module (``want``), the written shapes, warnings and peft's names for stacked
    experts."""

    tensors: dict[str, np.ndarray | Encoded] = field(default_factory=dict)
    rows: list[ModuleCompression] = field(default_factory=list)
    want: dict[str, tuple[int, float]] = field(default_factory=dict)
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    peft_names: dict[str, str] = field(default_factory=dict)
    config_keys: dict[str, str] = field(default_factory=dict)


def _truncate_all(adapter: Adapter, ranks: Mapping[str, int] | RankRule) -> _Outputs:
    """Every module truncated (on the worker threads), stacked experts together, and the
    other tensors copied."""
    out = _Outputs()
    # experts of a stacked target_parameters pair are truncated together (compress.experts)
    plain = [n for n in adapter.module_names if n not in adapter.experts]
    for done in map_ordered(lambda name: truncate_module(adapter, name, ranks), plain):
        out.tensors[done.a_key] = done.A
        out.tensors[done.b_key] = done.B
        out.shapes[done.row.name] = (tuple(done.A.shape), tuple(done.B.shape))
        out.want[done.row.name] = (done.row.r_new, config_number(done.row.alpha_new))
        out.rows.append(done.row)
    if adapter.has_experts:
        stacked = compress_experts(
            adapter, ranks, factored, lambda X, key: cast_to(X, storage_dtype(adapter, key))
        )
        out.tensors.update(stacked.tensors)
        out.rows += stacked.rows
        out.want.update(stacked.want)
        out.shapes.update(stacked.shapes)
        out.warnings += stacked.warnings
        out.peft_names, out.config_keys = stacked.peft_names, stacked.config_keys
        order = {n: i for i, n in enumerate(adapter.module_names)}
        out.rows.sort(key=lambda row: order[row.name])
    for key in adapter.other_keys:
        # np.require, not ascontiguousarray: that makes 0-d tensors (kohya alphas) 1-d
        out.tensors[key] = np.require(adapter.tensor(key), requirements="C")
    if adapter.layout is None and adapter.weights_path.suffix != ".safetensors":
        out.warnings.append(
            f"{adapter.weights_path.name} was converted to {SAFETENSORS_NAME} "
            "(every tensor keeps its dtype)"
        )
    return out


def _file_layout(adapter: Adapter, out: _Outputs) -> tuple[dict[str, str], dict[str, Any], str]:
    """The weights file's header metadata, the config (adapter_config.json, or a summary for a
    LoRA file) and the weights file's name, in the adapter's own format."""
    header: dict[str, str] = {"format": "pt"}
    if adapter.layout is None:
        return header, build_config(adapter.config.raw, out.want), SAFETENSORS_NAME
    # kohya/diffusers: the same file name and layout, alphas and header for the new ranks
    header, config, more = files.rewrite(adapter, out.tensors, out.want)
    out.warnings += more
    if set(out.tensors) != set(adapter.tensor_names):
        raise AdapterError("the compressed file would change its key set", hint="a bug")
    return header, config, adapter.weights_path.name


def _checked(
    tmp: Path, adapter: Adapter, out: _Outputs, *, verify: bool | None, base_model: Any
) -> str:
    """The written directory's verification level: the numpy self-check always, then peft's
    reload for a PEFT adapter when asked or available."""
    expected = {m.name: (m.r_new, m.scale) for m in out.rows}
    level = self_check(tmp, expected, out.shapes)
    if adapter.layout is not None:
        return level
    return (
        verify_with_peft(
            tmp,
            expected,
            base_model=base_model,
            verify=verify,
            peft_names=out.peft_names,
            config_keys=out.config_keys,
        )
        or level
    )


# --------------------------------------------------------------------------- end to end


def compress(
    source: str,
    output: str | Path,
    *,
    rank: int | None = None,
    energy: float | None = None,
    per_layer: bool = False,
    revision: str | None = None,
    adapter_name: str | None = None,
    force: bool = False,
    verify: bool | None = None,
    base_model: Any = None,
) -> CompressionResult:
    """Load SOURCE, audit it, plan ranks (one mode) and write the compressed adapter."""
    rule = RankRule(rank=rank, energy=energy, per_layer=per_layer)  # refuses bad modes first
    adapter, info = load_adapter(source, revision, adapter_name)
    _check_output(Path(output), adapter, force)
    result = compress_adapter(
        adapter,
        rule,
        output,
        verify=verify,
        base_model=base_model,
        force=force,
        source=info.display,
    )
    result.mode = rule.mode
    result.warnings[:0] = info.warnings  # what choosing the Hub repo's LoRA file skipped
    return result
