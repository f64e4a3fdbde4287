"""Sizes a serving stack sees: per-module ranks under a parameter or byte budget, and the
footprint (largest rank, file bytes) that a written adapter declares.

- :class:`BudgetRule` turns ``--budget-params N`` / ``--budget-mb M`` into per-module ranks with
  the exact knapsack of :mod:`gradience_hub.compress.budget`, and :class:`BudgetPlan` reports its
  error beside the uniform rank of the same size and the continuous relaxation's bound.
- A byte budget counts the weights file as written: the safetensors header (bounded from the
  tensors' names, dtypes and the input's shapes, which can only shrink), the tensors that are
  not LoRA factors, and ``k`` times each module's bytes per rank.
- :class:`ServingFootprint` is what vLLM (``--max-lora-rank``, which only accepts the values of
  :data:`VLLM_MAX_LORA_RANKS`) and peft's compiled hotswap (one rank for every adapter) need to
  know; it is printed and stored in the weights file's header under :data:`SERVING_KEY`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradience_hub import spectral
from gradience_hub.adapter import Adapter, LoraModule
from gradience_hub.adapter.safetensors_io import SafetensorsFile, rewrite_metadata
from gradience_hub.compress.budget import Allocation, allocate, discarded_energy, uniform_ranks
from gradience_hub.errors import UsageError
from gradience_hub.parallel import map_ordered

# vllm/config/lora.py: MaxLoRARanks = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]; vLLM refuses
# an adapter whose rank is above max_lora_rank and reserves buffers for max_lora_rank.
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# the safetensors header key (a JSON string) that describes what a serving stack will see
SERVING_KEY = "gradience_serving"
OBJECTIVES = ("relative", "absolute")
MB = 1_000_000  # "under 50 MB" as file managers and the Hub count: decimal megabytes

# safetensors dtype names as the header spells them, by numpy/safetensors-python dtype name
_HEADER_DTYPES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
    "f64": "F64",
    "f32": "F32",
    "f16": "F16",
    "bf16": "BF16",
    "f8_e4m3": "F8_E4M3",
    "f8_e5m2": "F8_E5M2",
    "i64": "I64",
    "i32": "I32",
    "i16": "I16",
    "i8": "I8",
    "u8": "U8",
}
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}
_ITEMSIZE.update({"I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1})


# --------------------------------------------------------------------------- serving footprint


def vllm_max_lora_rank(rank: int) -> int | None:
    """The smallest ``--max-lora-rank`` vLLM accepts that holds ``rank`` (None above 512)."""
    return next((v for v in VLLM_MAX_LORA_RANKS if v >= rank), None)


@dataclass(frozen=True)
class ServingFootprint:
    """What a serving stack sees of a written adapter.

    ``max_rank`` is the rank vLLM checks against ``--max-lora-rank`` (every module's factors must
    fit it); ``uniform_rank`` is set when every module has that one rank (what peft's compiled
    hotswap needs); ``file_bytes`` is the weights file's size; ``one_scale`` is False when the
    modules' ``alpha / r`` differ, which a stack that reads one ``lora_alpha / r`` (vLLM) cannot
    represent.
    """

    max_rank: int
    uniform_rank: int | None
    lora_params: int
    file_bytes: int
    one_scale: bool

    @property
    def vllm_max_lora_rank(self) -> int | None:
        """The smallest vLLM ``--max-lora-rank`` that loads this adapter."""
        return vllm_max_lora_rank(self.max_rank)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``--json``'s ``serving``; the header's :data:`SERVING_KEY`)."""
        return {
            "max_rank": self.max_rank,
            "uniform_rank": self.uniform_rank,
            "lora_params": self.lora_params,
            "file_bytes": self.file_bytes,
            "one_scale": self.one_scale,
            "vllm_max_lora_rank": self.vllm_max_lora_rank,
        }

    def lines(self) -> list[str]:
        """The footprint in words, for the terminal."""
        vllm = self.vllm_max_lora_rank
        out = [
            f"Serving: largest rank {self.max_rank}, weights file {self.file_bytes:,} bytes "
            f"({self.file_bytes / MB:.2f} MB), {self.lora_params:,} LoRA params",
            (
                f"  vLLM: --max-lora-rank {vllm}"
                if vllm is not None
                else "  vLLM: rank above 512, the largest --max-lora-rank vLLM accepts"
            ),
        ]
        if self.uniform_rank is not None:
            out.append(f"  peft hotswap: every module at rank {self.uniform_rank}")
        else:
            out.append("  peft hotswap: ranks differ; --pad-to R gives every module rank R")
        if not self.one_scale:
            out.append(
                "  note: modules differ in alpha/r; stacks that read one lora_alpha/r differ"
            )
        return out


def footprint(
    ranks: Mapping[str, int], scales: Mapping[str, float], params: int, file_bytes: int
) -> ServingFootprint:
    """The footprint of an adapter with per-module ``ranks`` and ``scales`` (alpha / r)."""
    values = set(ranks.values())
    distinct = {float(s) for s in scales.values()}
    return ServingFootprint(
        max_rank=max(values),
        uniform_rank=values.pop() if len(values) == 1 else None,
        lora_params=int(params),
        file_bytes=int(file_bytes),
        one_scale=len(distinct) <= 1,
    )


def stamp(weights: Path, fp: ServingFootprint) -> ServingFootprint:
    """Store ``fp`` in the header of the safetensors file ``weights`` (rewritten in place, every
    tensor and metadata entry kept) with ``file_bytes`` equal to the final file's size.

    The size depends on the digits of the size written into the header, so the file is written
    until the two agree (twice, rarely three times).
    """
    metadata = SafetensorsFile(weights).metadata()
    size = weights.stat().st_size
    for _ in range(5):
        fp = ServingFootprint(fp.max_rank, fp.uniform_rank, fp.lora_params, size, fp.one_scale)
        metadata[SERVING_KEY] = json.dumps(fp.to_dict(), sort_keys=True)
        rewrite_metadata(weights, metadata)
        new = weights.stat().st_size
        if new == size:
            return fp
        size = new
    raise AssertionError("the serving footprint's file size did not settle")  # a bug


def read_footprint(weights: Path) -> dict[str, Any] | None:
    """The :data:`SERVING_KEY` entry of a safetensors file's header, or None."""
    raw = SafetensorsFile(weights).metadata().get(SERVING_KEY)
    return json.loads(raw) if raw else None


# --------------------------------------------------------------------------- file bytes


def header_dtype(name: str) -> str:
    """The safetensors header's dtype name for a stored dtype name (``bf16``, ``float32``...)."""
    try:
        return _HEADER_DTYPES[name.lower()]
    except KeyError:
        raise UsageError(
            f"a byte budget cannot size tensors of dtype {name}",
            hint="use --budget-params instead",
        ) from None


def header_bound(
    entries: Sequence[tuple[str, str, tuple[int, ...]]], metadata: Mapping[str, str], data: int
) -> int:
    """An upper bound on ``8 + len(header)`` of a safetensors file holding ``entries`` (name,
    header dtype, shape) and ``metadata``, ``data`` bytes of tensors in all.

    The header is compact JSON (``{"__metadata__":{...},"name":{"dtype":..,"shape":[..],
    "data_offsets":[a,b]}, ...}``) padded with spaces to a multiple of 8; every offset is
    counted with the digits of ``data``, so the bound holds whatever order the writer chooses.
    """
    digits = len(str(data))
    parts = []
    if metadata:
        parts.append('"__metadata__":' + _compact(dict(metadata)))
    for name, dtype, shape in entries:
        shape_text = ",".join(str(int(d)) for d in shape)
        parts.append(
            f'{_compact(name)}:{{"dtype":"{dtype}","shape":[{shape_text}],'
            f'"data_offsets":[{"9" * digits},{"9" * digits}]}}'
        )
    body = len(("{" + ",".join(parts) + "}").encode("utf-8"))
    return 8 + body + 7  # length prefix, JSON, at most 7 bytes of padding


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------- budget plans


@dataclass(frozen=True)
class BudgetPlan:
    """Per-module ranks chosen under a budget, with the figures to judge them by.

    ``discarded``: the objective at the chosen ranks (with ``relative``: the sum over modules of
    the fraction of ``||dW||_F^2`` discarded; with ``absolute``: the sum of squared Frobenius
    errors of the scaled updates). ``uniform_rank``/``uniform_discarded``/``uniform_cost``: the
    largest uniform rank that fits the same budget, the baseline. ``bound``: the continuous
    relaxation's objective, below which no allocation within the budget can go. ``cost`` and
    ``budget`` are in ``unit`` (``params`` or ``bytes``: the file's bytes, header included).
    """

    ranks: dict[str, int]
    objective: str
    unit: str
    budget: int
    cost: int
    discarded: float
    bound: float
    uniform_rank: int
    uniform_cost: int
    uniform_discarded: float
    current_cost: int
    exact: bool

    @property
    def mode(self) -> str:
        """The rule in words (CompressionResult.mode)."""
        size = f"{self.budget:,} params" if self.unit == "params" else f"{self.budget:,} bytes"
        return f"budget {size}, {self.objective} objective"

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the ``--json`` document's ``budget``)."""
        return {
            "objective": self.objective,
            "unit": self.unit,
            "budget": self.budget,
            "cost": self.cost,
            "current_cost": self.current_cost,
            "discarded": self.discarded,
            "relaxation_bound": self.bound,
            "uniform": {
                "rank": self.uniform_rank,
                "cost": self.uniform_cost,
                "discarded": self.uniform_discarded,
            },
            "exact": self.exact,
        }

    def lines(self) -> list[str]:
        """The plan beside its baseline and bound, for the terminal."""
        what = (
            "sum of discarded energy fractions"
            if self.objective == "relative"
            else ("sum of squared Frobenius errors")
        )
        out = [
            f"Budget: {self.cost:,} of {self.budget:,} {self.unit} used "
            f"(the input: {self.current_cost:,})",
            f"  {what}: {self.discarded:.6g} (per-module ranks)",
            f"  uniform rank {self.uniform_rank} at {self.uniform_cost:,} {self.unit}: "
            f"{self.uniform_discarded:.6g}",
            f"  continuous relaxation bound: {self.bound:.6g}",
        ]
        if not self.exact:
            out.append(
                "  (costs rounded up to a coarser unit to keep the search small: within the "
                "budget, possibly not optimal)"
            )
        return out


@dataclass(frozen=True)
class BudgetRule:
    """``--budget-params N`` or ``--budget-mb M`` (exactly one), and the objective."""

    params: int | None = None
    megabytes: float | None = None
    objective: str = "relative"

    def __post_init__(self) -> None:
        if (self.params is None) == (self.megabytes is None):
            raise UsageError("choose one of --budget-params N or --budget-mb M")
        if self.objective not in OBJECTIVES:
            raise UsageError(
                f"--budget-objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}"
            )
        if self.params is not None and self.params < 1:
            raise UsageError(f"--budget-params must be positive, got {self.params}")
        if self.megabytes is not None and not (
            math.isfinite(self.megabytes) and self.megabytes > 0
        ):
            raise UsageError(f"--budget-mb must be a positive number, got {self.megabytes}")

    @property
    def unit(self) -> str:
        """``params`` or ``bytes``."""
        return "params" if self.params is not None else "bytes"

    @property
    def budget(self) -> int:
        """The budget in :attr:`unit` (bytes rounded down)."""
        if self.params is not None:
            return int(self.params)
        assert self.megabytes is not None
        return math.floor(self.megabytes * MB)


@dataclass(frozen=True)
class _Spectrum:
    name: str
    r: int
    S: np.ndarray  # singular values of the unscaled B @ A
    scale: float
    per_rank: int  # parameters of one rank


def _spectrum(adapter: Adapter, name: str) -> _Spectrum:
    module: LoraModule = adapter.module(name)
    if module.groups > 1:
        raise UsageError(
            f"module {name} is a grouped conv LoRA, whose rank moves in steps of its groups",
            hint="use --rank, --energy or --per-layer for this adapter",
        )
    S = spectral.lora_singular_values(module.B, module.A, 1.0)
    return _Spectrum(name, module.r, S, module.scale, module.params // module.r)


def _gains(spec: _Spectrum, objective: str) -> np.ndarray:
    energy = (spec.scale * spec.S.astype(np.float64)) ** 2
    if objective == "absolute":
        return energy
    total = float(np.sum(energy))
    return energy / total if total > 0 else np.zeros_like(energy)


def _byte_costs(adapter: Adapter, names: Sequence[str]) -> tuple[list[int], int]:
    """Bytes per rank of each module, and the bytes that do not depend on the ranks (the other
    tensors and a bound on the header, see :func:`header_bound`)."""
    per_rank: list[int] = []
    lora_keys: set[str] = set()
    lora_bytes_max = 0
    for name in names:
        pair = adapter.pairs[name]
        assert pair.a_key is not None and pair.b_key is not None
        lora_keys |= {pair.a_key, pair.b_key}
        a_shape = adapter.tensor(pair.a_key).shape
        b_shape = adapter.tensor(pair.b_key).shape
        r = int(a_shape[0])
        a_item = _ITEMSIZE[header_dtype(adapter.dtype_of(pair.a_key))]
        b_item = _ITEMSIZE[header_dtype(adapter.dtype_of(pair.b_key))]
        cost = (int(np.prod(a_shape)) * a_item + int(np.prod(b_shape)) * b_item) // r
        per_rank.append(cost)
        lora_bytes_max += cost * r
    entries: list[tuple[str, str, tuple[int, ...]]] = []
    other = 0
    for key in adapter.tensor_names:
        shape = tuple(int(d) for d in adapter.tensor(key).shape)
        dtype = header_dtype(adapter.dtype_of(key))
        entries.append((key, dtype, shape))
        if key not in lora_keys:
            other += int(np.prod(shape)) * _ITEMSIZE[dtype]
    # the header as the input's shapes make it: a lower rank only shortens shape digits
    metadata = dict(adapter.header_metadata())
    metadata.setdefault("format", "pt")
    # room for the footprint and for the format's rewritten metadata (ss_network_dim becomes
    # "Dynamic", diffusers' config gains a rank_pattern: one entry per module at most)
    reserve = 512 + sum(len(_compact(n)) + 16 for n in names)
    fixed = header_bound(entries, metadata, lora_bytes_max + other) + other + reserve
    return per_rank, fixed


def plan_budget(adapter: Adapter, rule: BudgetRule) -> BudgetPlan:
    """Per-module ranks for ``adapter`` under ``rule`` (refused, exit 2, when even rank 1
    everywhere does not fit, or for adapters whose ranks are not free per module)."""
    if adapter.has_experts:
        raise UsageError(
            "--budget-* chooses one rank per module; peft target_parameters (expert) LoRA "
            "stacks its experts at one rank",
            hint="use --rank, --energy or --per-layer for this adapter",
        )
    names = adapter.module_names
    spectra = list(map_ordered(lambda n: _spectrum(adapter, n), names))
    gains = [_gains(s, rule.objective) for s in spectra]
    if rule.unit == "params":
        costs, fixed = [s.per_rank for s in spectra], 0
    else:
        costs, fixed = _byte_costs(adapter, names)
    budget = rule.budget - fixed
    current = fixed + sum(s.r * c for s, c in zip(spectra, costs, strict=True))
    floor = fixed + sum(costs)
    if budget < sum(costs):
        raise UsageError(
            f"the budget of {rule.budget:,} {rule.unit} is below the smallest adapter this "
            f"one can become ({floor:,} {rule.unit}: every module at rank 1)",
            hint=f"raise the budget to at least {floor:,} {rule.unit}",
        )
    budget = min(budget, current - fixed)  # more than the input holds keeps every rank
    found: Allocation = allocate(gains, costs, budget)
    uniform, k = uniform_ranks(gains, costs, budget)
    return BudgetPlan(
        ranks={s.name: int(r) for s, r in zip(spectra, found.ranks, strict=True)},
        objective=rule.objective,
        unit=rule.unit,
        budget=rule.budget,
        cost=fixed + found.cost,
        discarded=found.discarded,
        bound=found.relaxation_bound,
        uniform_rank=k,
        uniform_cost=fixed + sum(r * c for r, c in zip(uniform, costs, strict=True)),
        uniform_discarded=discarded_energy(gains, uniform),
        current_cost=current,
        exact=found.exact,
    )
