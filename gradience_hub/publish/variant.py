"""``annotate --push-variant [NAME] --to ORG/REPO``: a PASSing bench's recommended (or named)
variant published as its own model repo, in one commit.

The repo holds the variant's adapter as the bench wrote it (``<bench dir>/<variant>/``, in its
format), ``gradience/bench.json`` (the record the evidence comes from) and a card: the source
adapter and revision it was compressed from, the base model (``base_model`` metadata), the
bench's evidence for this variant (score, worst delta, interval, retained gain, the policy) and
its own ``model-index`` (the variant's score; :mod:`gradience_hub.hub.evals`). Refused: a FAIL
or INCONCLUSIVE record (exit 1), a variant the bench did not test or that did not pass, and a
folder whose ranks are not the tested variant's (exit 2). Re-runs commit only what changed:
identical files are dropped by the client, so an unchanged variant makes no commit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

from gradience_hub import hub
from gradience_hub.adapter import Adapter, open_adapter
from gradience_hub.adapter.lorafile import lora_files
from gradience_hub.errors import AdapterError, PolicyFailed, UsageError
from gradience_hub.hub.evals import merge_model_index
from gradience_hub.hub.repos import commit_to_main
from gradience_hub.markdown import delta, is_repo_id, md, metric, pct
from gradience_hub.publish.readme import library_for
from gradience_hub.record.hub_eval import claim_from_record
from gradience_hub.record.io import load_bench
from gradience_hub.record.model import BenchRecord, VariantRecord

RECORD_PATH = "gradience/bench.json"
TAGS = ("lora", "gradience", "compressed")


@dataclass(frozen=True)
class VariantPush:
    """What ``--push-variant`` published (or would, with ``dry_run``)."""

    repo_id: str
    variant: str
    files: tuple[str, ...]
    changed: bool
    commit_url: str | None


def select_variant(record: BenchRecord, name: str | None) -> VariantRecord:
    """The variant to push: ``name``, else the recommendation; refusals as the module says."""
    if record.status != "PASS":
        raise PolicyFailed(
            f"the bench is {record.status}: only a PASSing bench's variant is published",
            hint="publish the evidence with annotate; push a variant once a bench passes",
        )
    wanted = name or (record.recommendation.variant if record.recommendation else None)
    tested = {v.name: v for v in record.variants}
    if wanted is None or wanted not in tested:
        listed = ", ".join(sorted(tested)) or "none"
        raise UsageError(
            f"the bench did not test a variant named {wanted!r} (tested: {listed})",
            hint="--push-variant takes one of the bench's variant names, or none for its "
            "recommendation",
        )
    variant = tested[wanted]
    if not variant.passed:
        raise UsageError(
            f"variant {wanted} did not pass the bench ({variant.verdict})",
            hint="push the recommended variant (--push-variant without a name)",
        )
    return variant


def _open_variant(directory: Path, variant: VariantRecord) -> tuple[Adapter, list[Path]]:
    """The variant's adapter as the bench wrote it, refused unless its ranks are the tested
    ones; returns it and the files to publish."""
    if not directory.is_dir():
        raise UsageError(
            f"no folder {directory} with variant {variant.name}'s adapter",
            hint="pass the bench.json that sits in the bench's output folder",
        )
    if (directory / "adapter_config.json").is_file():
        adapter = open_adapter(directory)
        files = [directory / "adapter_config.json", adapter.weights_path]
    else:
        found = lora_files(directory)
        if len(found) != 1:
            raise AdapterError(f"{directory} holds no single adapter to publish")
        adapter = open_adapter(directory)
        files = [adapter.weights_path]
    ranks = {}
    for name in adapter.module_names:
        pair = adapter.pairs[adapter.experts[name].stored if name in adapter.experts else name]
        assert pair.a_key is not None
        ranks[name] = int(adapter.tensor(pair.a_key).shape[0])
    expected = variant.rank_pattern or (
        dict.fromkeys(ranks, variant.rank) if variant.rank is not None else None
    )
    if expected is not None and any(ranks.get(k) != r for k, r in expected.items()):
        raise AdapterError(
            f"{directory} does not hold the adapter the bench tested as {variant.name} "
            "(its ranks differ from the record's)",
            hint="re-run the bench, or pass the bench.json written beside this folder",
        )
    return adapter, files


def _ci(variant: VariantRecord) -> str:
    ci = variant.delta_ci
    if ci is None:
        return "—"
    return f"{delta(ci.low)} to {delta(ci.high)} ({pct(ci.level, 0)} {md(ci.method)})"


def variant_card(
    record: BenchRecord, variant: VariantRecord, repo_id: str, adapter_format: str
) -> str:
    """The variant repo's README.md: metadata (base_model, library, tags, model-index) and
    the evidence, every untrusted string escaped."""
    record_url = f"{hub.repo_url(repo_id)}/blob/main/{RECORD_PATH}"
    claim = dataclasses.replace(
        claim_from_record(record, model_name=repo_id, source_url=record_url),
        value=float(variant.mean if variant.mean is not None else 0.0),
    )
    meta: dict[str, object] = {}
    base = record.adapter.base_model
    if is_repo_id(base):
        meta["base_model"] = base
    library = library_for(adapter_format)
    if library:
        meta["library_name"] = library
    meta["tags"] = list(TAGS)
    if variant.mean is not None:
        meta["model-index"] = merge_model_index(None, claim)
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    source = record.adapter.source
    revision = record.adapter.revision
    policy = record.policy
    lines = [
        f"# {md(repo_id)}",
        "",
        f"The **{md(variant.name)}** variant of {md(source)}"
        + (f" at revision {md(revision)}" if revision else "")
        + f", compressed by gradience-hub and checked by a {len(record.protocol.seeds)}-seed "
        f"bench on {md(record.task.name)} ({md(record.task.metric)}).",
        "",
        f"- Base model: {md(base)}",
        f"- Source adapter: {md(source)}" + (f" @ {md(revision)}" if revision else ""),
        f"- Parameters: {md(variant.params)} "
        f"({pct(variant.param_reduction)} fewer than the source)",
        "",
        "| | |",
        "|---|---|",
        f"| Score ({md(record.task.metric)}, mean) | {metric(variant.mean)} |",
        f"| Source adapter's score | {metric(record.probe.mean)} |",
        f"| Worst-seed delta | {delta(variant.worst_delta)} |",
        f"| Delta interval | {_ci(variant)} |",
        f"| Retained gain over the base model (worst seed) | {pct(variant.retained_gain_worst)} |",
        f"| Verdict | {md(variant.verdict)} |",
        f"| Policy | {md(policy.rule)}, max drop {pct(policy.max_drop)}, min pass rate "
        f"{pct(policy.min_pass_rate, 0)} |",
        "",
        f"The full record is [{RECORD_PATH}]({RECORD_PATH}).",
    ]
    refusal = claim.benchmark_refusal()
    if refusal is not None:
        lines += [
            "",
            "This score is the bench's estimate for comparing the variants, not a benchmark "
            f"score: {md(refusal)}.",
        ]
    return f"---\n{front}---\n\n" + "\n".join(lines) + "\n"


def push_variant(
    bench_json: str | Path,
    to: str,
    name: str | None = None,
    *,
    variants_dir: str | Path | None = None,
    dry_run: bool = False,
    private: bool = False,
) -> VariantPush:
    """Publish the variant of the bench at ``bench_json`` as the model repo ``to``."""
    if not is_repo_id(to) or "/" not in to:
        raise UsageError(f"--to must be ORG/REPO, got {to!r}")
    path = Path(bench_json)
    record = load_bench(path)
    variant = select_variant(record, name)
    folder = Path(variants_dir) if variants_dir is not None else path.parent
    adapter, paths = _open_variant(folder / variant.name, variant)
    files = {p.name: p.read_bytes() for p in paths}
    files["README.md"] = variant_card(record, variant, to, adapter.format).encode("utf-8")
    files[RECORD_PATH] = path.read_bytes()
    if dry_run:
        return VariantPush(to, variant.name, tuple(sorted(files)), False, None)
    outcome = commit_to_main(
        to,
        files,
        f"gradience: {variant.name} variant of {record.adapter.source}"[:200],
        f"Compressed adapter ({variant.name}) with its bench evidence, published by "
        "gradience-hub annotate --push-variant.",
        private=private,
    )
    return VariantPush(to, variant.name, tuple(sorted(files)), outcome.changed, outcome.commit_url)
