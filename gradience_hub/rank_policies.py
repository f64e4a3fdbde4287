"""Rank policies: what rank a LoRA module needs, read off its singular values. Pure numpy.

Each policy turns the singular values ``s`` (descending) of one module's update ``dW`` into a
suggested rank ``k``. The definitions are gradience 0.11.0's
(``gradience/vnext/audit/rank_policies.py``), number for number, so that both tools give the
same ``k`` for every module and policy of the same adapter:

``energy@T``
    the smallest ``k`` whose top-``k`` values hold a fraction ``T`` of ``sum s^2`` (no slack:
    ``cumsum / total >= T``, as gradience), 0 for a zero update.
``knee``
    Kneedle on the cumulative energy curve: ``y_i = sum_{j<=i} s_j^2 / sum s^2`` against
    ``x_i = i / (n - 1)`` (float32, as theirs), ``y`` smoothed by a moving average of
    ``w = min(5, max(3, n // 3))`` points (``np.convolve(..., mode="same")``, so the ends are
    damped by the zero padding, as theirs), ``k = argmax(y_smooth - x) + 1``. When the maximum
    lies in the last 15% (index ``>= max(1, int(0.85 n))``) or is below 0.1 the spectrum is
    called flat and ``k = r`` (no compression).
``erank``
    Roy & Vetterli's effective rank ``exp(H(p))``, ``p_i = s_i / sum s``, rounded up and
    clamped to ``[1, r]``.
``oht``
    Gavish & Donoho's optimal hard threshold with unknown noise:
    ``tau = omega(beta) * median(s)``, ``omega(beta) = 0.56 beta^3 - 0.95 beta^2 + 1.82 beta +
    1.43``, ``beta = min(d_out, d_in) / max(d_out, d_in)`` from the module's shape; ``k`` =
    the count of ``s > tau`` (float32, as theirs) clamped to ``[1, r]``; ``k = 1`` when
    ``r < 3``.
``stable-ceil``
    ``ceil(||dW||_F^2 / ||dW||_2^2)`` clamped to ``[1, n]``.

Here ``n`` is the count of singular values above ``EPS`` (1e-12, absolute, as theirs) and
``r`` the allocated rank.

Where theirs is weak, and kept so under its name: ``oht`` takes the median of only the ``r``
non-zero singular values of a rank-``r`` update while ``omega(beta)`` is calibrated for the
median of all ``min(d_out, d_in)`` singular values of a noisy full matrix; the median of those
(all but ``r`` of them zero for a LoRA update) would be 0, so the rule has no exact analogue
here and ``oht`` is a heuristic: a value counts as signal when it exceeds about 1.4-2.9 times
the median of the ``r`` values. gradience 0.11's own CLI also maps ``energy@0.95`` to its
default threshold 0.90; here ``energy@0.95`` means 0.95 (its audit rows carry the true 0.95
energy rank as ``energy_rank_95``, which agrees).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from gradience_hub.errors import UsageError
from gradience_hub.spectral import suggest_rank

EPS = 1e-12  # gradience 0.11's eps: singular values at or below it count as zero

DEFAULT_POLICIES = "energy@0.90,knee,erank,oht,stable-ceil"
KINDS = ("energy", "knee", "erank", "oht", "stable-ceil")
# gradience 0.11's per-layer keys (its `rank_suggestions`) for the same policies
V011_KEYS = {"knee": "knee", "erank": "erank", "oht": "oht"}

_ENERGY = re.compile(r"energy@(0?\.\d+|1(?:\.0*)?)")
_KNEE_FLAT_THRESHOLD = 0.1  # gradience's default flat_threshold
_KNEE_TAIL = 0.85  # a knee in the last 15% of the spectrum means no knee


@dataclass(frozen=True)
class PolicySpec:
    """One policy by name: ``energy@T`` (``0 < T <= 1``), ``knee``, ``erank``, ``oht`` or
    ``stable-ceil``."""

    name: str
    kind: str = field(init=False)
    threshold: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        match = _ENERGY.fullmatch(self.name)
        if match:
            t = float(match.group(1))
            if not 0.0 < t <= 1.0:
                raise UsageError(f"rank policy {self.name!r}: the energy must be in (0, 1]")
            object.__setattr__(self, "kind", "energy")
            object.__setattr__(self, "threshold", t)
            # one spelling per threshold, so 'energy@.9' and 'energy@0.90' are one column
            spelled = f"{t:.2f}" if round(t, 2) == t else f"{t:g}"
            object.__setattr__(self, "name", f"energy@{spelled}")
            return
        if self.name not in KINDS or self.name == "energy":
            raise UsageError(
                f"unknown rank policy {self.name!r}",
                hint="use energy@T (e.g. energy@0.90), knee, erank, oht or stable-ceil",
            )
        object.__setattr__(self, "kind", self.name)


def parse_policies(text: str) -> list[PolicySpec]:
    """``"energy@0.90,knee,erank"`` -> specs, in order, without duplicates (comma- or
    space-separated, as gradience accepts)."""
    names = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    if not names:
        hint = f"e.g. --rank-policies {DEFAULT_POLICIES}"
        raise UsageError("--rank-policies is empty", hint=hint)
    specs: list[PolicySpec] = []
    for name in names:
        spec = PolicySpec(name)
        if spec.name not in {s.name for s in specs}:
            specs.append(spec)
    return specs


@dataclass(frozen=True)
class PolicyResult:
    """One policy's suggestion for one module.

    ``threshold`` is the policy's cut in its own units (``unit``): the energy fraction, the
    singular value ``tau``, the effective rank, the stable rank, or the knee's height
    ``max(y - x)``; ``note`` says when a guard decided ``k`` instead of the rule."""

    policy: str
    k: int
    threshold: float | None
    unit: str
    note: str = ""


@dataclass(frozen=True)
class CleanSpectrum:
    """What several policies read off one spectrum, computed once per module: the values
    above ``EPS``, their energy total and cumulative energy fraction (None for a zero total)."""

    values: np.ndarray
    total: float
    cumulative: np.ndarray | None


def clean_spectrum(s: np.ndarray) -> CleanSpectrum:
    """``s``'s shared figures, to pass to each policy of one module (:func:`apply_policies`)."""
    sc = s[s > EPS]
    energy = sc**2
    total = float(energy.sum())
    return CleanSpectrum(sc, total, np.cumsum(energy) / total if total > EPS else None)


def energy_policy(
    s: np.ndarray, t: float, clean: CleanSpectrum | None = None, name: str | None = None
) -> PolicyResult:
    """``energy@t`` (see the module docstring); ``name``: the policy's spelling, when the
    caller has its spec."""
    name = name or PolicySpec(f"energy@{t}").name
    c = clean or clean_spectrum(s)
    if c.values.size == 0 or c.cumulative is None:
        return PolicyResult(name, 0, t, "energy", "zero update")
    hits = np.nonzero(c.cumulative >= t)[0]
    k = int(hits[0]) + 1 if hits.size else int(c.values.size)
    return PolicyResult(name, k, t, "energy")


def knee_policy(s: np.ndarray, r: int, clean: CleanSpectrum | None = None) -> PolicyResult:
    """``knee`` (see the module docstring)."""
    c = clean or clean_spectrum(s)
    n = int(c.values.size)
    if n < 2:
        return PolicyResult("knee", n or 1, None, "knee height", "fewer than 2 values")
    if c.cumulative is None:
        return PolicyResult("knee", 1, None, "knee height", "zero update")
    y = c.cumulative
    x = np.arange(n, dtype=np.float32) / (n - 1)
    window = min(5, max(3, n // 3))
    if n >= window:
        y = np.convolve(y, np.ones(window) / window, mode="same")
    diff = y - x
    idx = int(diff.argmax())
    height = float(diff[idx])
    if idx >= max(1, int(_KNEE_TAIL * n)):
        return PolicyResult("knee", max(1, r), height, "knee height", "knee in the tail: flat")
    if height < _KNEE_FLAT_THRESHOLD:
        return PolicyResult("knee", max(1, r), height, "knee height", "weak knee: flat")
    return PolicyResult("knee", max(1, min(idx + 1, r)), height, "knee height")


def erank_policy(s: np.ndarray, r: int, clean: CleanSpectrum | None = None) -> PolicyResult:
    """``erank`` (see the module docstring)."""
    sc = (clean or clean_spectrum(s)).values
    if sc.size == 0:
        return PolicyResult("erank", 0, None, "effective rank", "zero update")
    p = sc / float(sc.sum())
    p = p[p > EPS]
    if p.size == 0:
        return PolicyResult("erank", 1, None, "effective rank", "degenerate")
    erank = float(np.exp(-(p * np.log(p)).sum()))
    return PolicyResult("erank", max(1, min(math.ceil(erank), r)), erank, "effective rank")


def omega(beta: float) -> float:
    """Gavish & Donoho's cubic fit of ``omega(beta)`` (unknown noise level), as gradience."""
    return 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43


def oht_policy(s: np.ndarray, shape: tuple[int, int], r: int) -> PolicyResult:
    """``oht`` (see the module docstring)."""
    if s.size == 0:
        return PolicyResult("oht", 0, None, "singular value", "zero update")
    if r < 3:
        return PolicyResult("oht", 1, None, "singular value", "r < 3")
    # float32, as gradience 0.11 computes it: ties at tau must fall the same way
    s32 = np.asarray(s, dtype=np.float32)
    sc = s32[s32 > EPS]
    if sc.size == 0:
        return PolicyResult("oht", 0, None, "singular value", "zero update")
    d_out, d_in = shape
    beta = min(d_out, d_in) / max(d_out, d_in)
    median = _median32(sc)
    if median <= EPS:
        return PolicyResult("oht", 1, 0.0, "singular value", "median is zero")
    tau = omega(beta) * median
    k_raw = int(np.count_nonzero(sc > np.float32(tau)))
    return PolicyResult("oht", max(1, min(k_raw, r)), tau, "singular value")


def _median32(x: np.ndarray) -> float:
    """``float(np.median(x))`` of a non-empty float32 array, without its overhead: the middle
    value, or the float32 mean of the two middle values (their float32 sum halved, exactly
    as numpy's mean of two float32 values)."""
    n = int(x.size)
    part = np.partition(x, [(n - 1) // 2, n // 2])
    lo, hi = part[(n - 1) // 2], part[n // 2]
    return float(lo) if n % 2 else float(np.float32(lo + hi) / np.float32(2))


def stable_ceil_policy(s: np.ndarray, clean: CleanSpectrum | None = None) -> PolicyResult:
    """``stable-ceil`` (see the module docstring)."""
    c = clean or clean_spectrum(s)
    sc = c.values
    if sc.size == 0:
        return PolicyResult("stable-ceil", 0, None, "stable rank", "zero update")
    # gradience adds eps to the denominator; kept, so an integer stable rank rounds the same
    sr = c.total / (float(sc[0]) ** 2 + EPS)
    return PolicyResult("stable-ceil", min(max(1, math.ceil(sr)), int(sc.size)), sr, "stable rank")


def apply_policy(
    spec: PolicySpec,
    s: np.ndarray,
    shape: tuple[int, int],
    r: int,
    clean: CleanSpectrum | None = None,
) -> PolicyResult:
    """One policy on one module: ``s`` descending singular values, ``shape`` ``(d_out, d_in)``
    of ``dW``, ``r`` the allocated rank (``clean``: ``s``'s shared figures, when the caller
    applies several policies)."""
    s = np.asarray(s, dtype=np.float64)
    if spec.kind == "oht":
        return oht_policy(s, shape, r)
    c = clean or clean_spectrum(s)
    if spec.kind == "energy":
        assert spec.threshold is not None
        return energy_policy(s, spec.threshold, c, spec.name)
    if spec.kind == "knee":
        return knee_policy(s, r, c)
    if spec.kind == "erank":
        return erank_policy(s, r, c)
    return stable_ceil_policy(s, c)


@dataclass(frozen=True)
class ModulePolicies:
    """Every policy's suggestion for one module, their spread and consensus."""

    results: tuple[PolicyResult, ...]

    @cached_property
    def ks(self) -> dict[str, int]:
        """Policy name -> k (built once: the summaries read it per policy and module)."""
        return {p.policy: p.k for p in self.results}

    @property
    def spread(self) -> int:
        """``max k - min k`` over the policies (gradience's per-layer spread)."""
        ks = [p.k for p in self.results]
        return max(ks) - min(ks) if ks else 0

    @property
    def consensus(self) -> int:
        """The median ``k``, rounded up on a tie between two (keeping rank is the safe side)."""
        ks = sorted(p.k for p in self.results)
        if not ks:
            return 0
        n = len(ks)  # the median of integers: the middle one, or the mean of the middle two
        return ks[n // 2] if n % 2 else math.ceil((ks[n // 2 - 1] + ks[n // 2]) / 2)


def apply_policies(
    specs: list[PolicySpec], s: np.ndarray, shape: tuple[int, int], r: int
) -> ModulePolicies:
    """All ``specs`` on one module."""
    s = np.asarray(s, dtype=np.float64)
    clean = clean_spectrum(s)
    return ModulePolicies(tuple(apply_policy(spec, s, shape, r, clean) for spec in specs))


@dataclass(frozen=True)
class PolicySummary:
    """One policy over the adapter: the median and p90 of its per-module ``k`` (linear
    interpolation, as gradience's ``uniform_median``/``uniform_p90``), the largest, the global
    ranks those suggest (rounded up to a power of two, at most the allocated rank) and a
    PEFT-ready ``rank_pattern`` (each module's own ``k``, at least 1)."""

    policy: str
    median: float
    p90: float
    max: int
    suggested_r_median: int
    suggested_r_p90: int
    rank_pattern: dict[str, int]

    def to_dict(self) -> dict[str, object]:
        """audit.json form."""
        return {
            "median": self.median,
            "p90": self.p90,
            "max": self.max,
            "suggested_r_median": self.suggested_r_median,
            "suggested_r_p90": self.suggested_r_p90,
            "rank_pattern": dict(self.rank_pattern),
        }


def summarize(
    specs: list[PolicySpec], modules: dict[str, ModulePolicies], allocated: int
) -> list[PolicySummary]:
    """Per policy, over ``modules`` (module name -> its policies)."""
    out: list[PolicySummary] = []
    for spec in specs:
        ks = {name: m.ks[spec.name] for name, m in modules.items() if spec.name in m.ks}
        if not ks:
            continue
        values = np.array(list(ks.values()), dtype=np.float64)
        median = float(np.percentile(values, 50))
        p90 = float(np.percentile(values, 90))
        out.append(
            PolicySummary(
                policy=spec.name,
                median=median,
                p90=p90,
                max=int(values.max()),
                suggested_r_median=suggest_rank(median, allocated),
                suggested_r_p90=suggest_rank(p90, allocated),
                rank_pattern={name: max(1, k) for name, k in ks.items()},
            )
        )
    return out


_WHY = {
    "energy": "{p} keeps the {k} directions that hold {t:.0%} of the energy",
    "knee": "{p} cuts where the cumulative energy curve bends (k={k})",
    "erank": "{p} counts exp(entropy) = {t:.2f} effective directions (k={k})",
    "oht": "{p} keeps the values above omega(beta) x median = {t:.3g} (k={k})",
    "stable-ceil": "{p} rounds the stable rank {t:.2f} up (k={k})",
}


def _reason(result: PolicyResult) -> str:
    kind = PolicySpec(result.policy).kind
    if result.note:
        if "flat" in result.note:
            return f"{result.policy} finds no clear bend ({result.note}) and keeps all {result.k}"
        return f"{result.policy} gives {result.k} ({result.note})"
    return _WHY[kind].format(p=result.policy, k=result.k, t=result.threshold or 0.0)


def why_they_differ(module: ModulePolicies) -> str:
    """One sentence: why the lowest and the highest suggestion differ (or that all agree)."""
    if not module.results:
        return "No policy was applied."
    low = min(module.results, key=lambda p: p.k)
    high = max(module.results, key=lambda p: p.k)
    if low.k == high.k:
        return f"All policies agree on k={low.k}."
    return (
        f"{low.policy} suggests {low.k} and {high.policy} {high.k}: {_reason(low)}, "
        f"while {_reason(high)}."
    )
