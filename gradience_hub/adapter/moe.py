"""peft's LoRA on expert parameters (``target_parameters``, e.g. ``experts.down_proj`` of
Mixtral-, Qwen3-MoE- or gpt-oss-style models): one stacked factor pair holds every expert.

peft's ``lora.ParamWrapper`` over a 3-D parameter of ``E`` experts stores ``lora_A`` as
``(r * E, d_in)`` and ``lora_B`` as ``(d_out, r * E)``; its ``get_delta_weight`` reshapes
``A`` to ``(E, r, d_in)`` and ``B`` to ``(d_out, r, E)``, so expert ``e``'s update is
``scale * B[:, e::E] @ A[e*r:(e+1)*r]`` with ``scale = alpha / r`` (``/ sqrt(r)`` under
rsLoRA) and ``r`` the configured rank for ``<module>.<parameter>``. Each expert is audited as
its own module, named ``<module>.<parameter>[e]``.

Several parameters of one module (``gate_up_proj`` and ``down_proj``) are wrapped by nested
wrappers: the outermost stores ``<module>.lora_A``, the next ``<module>.base_layer.lora_A``,
and so on. peft nests them in the order the model class defines the parameters, which the
adapter files do not record; every transformers MoE block defines its input projections
(``gate_up_proj``, ``gate_proj``, ``up_proj``, ``w1``, ``w3``) before its output projection
(``down_proj``, ``w2``), so that order is used, and anything else is refused (exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gradience_hub.errors import AdapterError

_BASE_LAYER = ".base_layer"
# definition order of expert parameters in transformers' MoE blocks (see the module doc)
_DEFINITION_ORDER = ("gate_up_proj", "gate_proj", "up_proj", "w1", "w3", "down_proj", "w2")


@dataclass(frozen=True)
class Expert:
    """One expert of a stacked ``target_parameters`` pair."""

    stored: str  # the pair's module name in the weights file (with any ".base_layer" chain)
    parameter: str  # "<module>.<parameter>", the key peft matches rank_pattern against
    index: int
    n_experts: int

    @property
    def name(self) -> str:
        """``<module>.<parameter>[e]``."""
        return f"{self.parameter}[{self.index}]"


def _unwrap(stored: str) -> tuple[str, int]:
    """``"m.experts.base_layer.base_layer"`` -> ``("m.experts", 2)`` (the nesting depth)."""
    depth = 0
    while stored.endswith(_BASE_LAYER):
        stored = stored[: -len(_BASE_LAYER)]
        depth += 1
    return stored, depth


def _candidates(module: str, target_parameters: list[str]) -> list[str]:
    """Parameter names of ``module`` that peft's rule (``key == target`` or
    ``key.endswith("." + target)``) could have targeted."""
    found: list[str] = []
    for target in target_parameters:
        _, _, param = str(target).rpartition(".")
        if not param:
            continue
        key = f"{module}.{param}"
        if (key == target or key.endswith(f".{target}")) and param not in found:
            found.append(param)
    return found


def parameter_names(stored_names: list[str], raw_config: dict[str, Any]) -> dict[str, str]:
    """Stored pair name -> ``<module>.<parameter>`` for the pairs that are ParamWrappers."""
    targets = raw_config.get("target_parameters") or []
    if not isinstance(targets, list) or not targets:
        return {}
    by_module: dict[str, dict[int, str]] = {}
    for stored in stored_names:
        module, depth = _unwrap(stored)
        if _candidates(module, targets):
            by_module.setdefault(module, {})[depth] = stored
    out: dict[str, str] = {}
    for module, depths in by_module.items():
        params = _candidates(module, targets)
        if sorted(depths) != list(range(len(params))):
            raise AdapterError(
                f"module {module}: {len(depths)} nested LoRA wrappers for target_parameters "
                f"{params}; cannot tell which factors belong to which parameter",
                hint="this target_parameters layout is not supported; please report it",
            )
        if len(params) > 1:
            unknown = [p for p in params if p not in _DEFINITION_ORDER]
            if unknown:
                raise AdapterError(
                    f"module {module}: cannot tell which nested LoRA wrapper holds parameter "
                    f"{unknown[0]} (peft nests them in the model's definition order)",
                    hint="this target_parameters layout is not supported; please report it",
                )
            params = sorted(params, key=_DEFINITION_ORDER.index)
        # the innermost wrapper (deepest base_layer chain) wraps the first-defined parameter
        n = len(params)
        for depth, stored in depths.items():
            out[stored] = f"{module}.{params[n - 1 - depth]}"
    return out


def experts_of(stored: str, parameter: str, rows: int, cols: int, r: int) -> list[Expert]:
    """The experts of a stacked pair whose ``lora_A`` has ``rows`` rows and ``lora_B`` ``cols``
    columns at configured rank ``r``; refuses layouts that are not ``r * E``."""
    if rows != cols or r <= 0 or rows % r:
        raise AdapterError(
            f"module {parameter}: lora_A has {rows} rows and lora_B {cols} columns, not "
            f"r * experts with the configured r={r}",
            hint="the weights do not match adapter_config.json's r for this target parameter",
        )
    n = rows // r
    return [Expert(stored=stored, parameter=parameter, index=e, n_experts=n) for e in range(n)]
