"""Templates, escaping, the sandbox, README splicing and the ``render`` command.

Golden files live in tests/golden/*.md; regenerate them with ``GRADIENCE_UPDATE_GOLDEN=1``
and read the diff before committing.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gradience_hub.audit import AuditReport
from gradience_hub.errors import CardError, RecordError, TemplateError, UsageError
from gradience_hub.markdown import delta, human, md, metric, num, pct, ranks, signed_pct
from gradience_hub.publish import render as R
from gradience_hub.record import BenchRecord, record_from_dict

GOLDEN = Path(__file__).parent / "golden"
REPO_URL = "https://huggingface.co/acme/llama-3.2-1b-sst2-lora"
HUB_CONTEXT = {"repo_url": REPO_URL, "revision": "refs/pr/3", "utilization_png": True}
PY = sys.executable


def render(kind: str, audit: Any, bench: Any, **kwargs: Any) -> str:
    """``R.render`` on the typed documents of these audit.json / bench.json dicts, read as
    every caller reads them (the bench judged on reading)."""
    return R.render(kind, typed_audit(audit), typed_bench(bench), **kwargs)


def typed_audit(audit: Any) -> AuditReport | None:
    return AuditReport.from_dict(audit) if audit is not None else None


def typed_bench(bench: Any) -> BenchRecord | None:
    return record_from_dict(bench) if bench is not None else None


def load(name: str) -> dict[str, Any]:
    return json.loads((GOLDEN / name).read_text(encoding="utf-8"))


@pytest.fixture
def audit() -> dict[str, Any]:
    return load("audit.json")


@pytest.fixture
def bench() -> dict[str, Any]:
    return load("bench_pass.json")


@pytest.fixture
def bench_fail() -> dict[str, Any]:
    return load("bench_fail.json")


# --------------------------------------------------------------------------- golden files

CASES = {
    "card_pass": ("card", "audit.json", "bench_pass.json", {"utilization_png": True}),
    "card_fail": ("card", "audit.json", "bench_fail.json", {}),
    "card_audit_only": ("card", "audit.json", None, {"utilization_png": True}),
    "card_bench_only": ("card", None, "bench_pass.json", {}),
    "comment_pass": ("comment", "audit.json", "bench_pass.json", HUB_CONTEXT),
    "comment_fail": ("comment", "audit.json", "bench_fail.json", {}),
    "comment_audit_only": ("comment", "audit.json", None, {}),
    "summary_pass": ("summary", "audit.json", "bench_pass.json", HUB_CONTEXT),
    "summary_audit_only": ("summary", "audit.json", None, {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    kind, audit_file, bench_file, context = CASES[case]
    audit = load(audit_file) if audit_file else None
    bench = load(bench_file) if bench_file else None
    text = render(kind, audit, bench, context=dict(context))
    path = GOLDEN / f"{case}.md"
    if os.environ.get("GRADIENCE_UPDATE_GOLDEN"):
        changed = not path.is_file() or path.read_bytes() != text.encode("utf-8")
        path.write_bytes(text.encode("utf-8"))
        # Regenerating must never pass silently: the run that rewrote a file fails, naming it,
        # so the rewrite is reviewed (git diff) and the next run without the flag checks it.
        pytest.fail(
            f"GRADIENCE_UPDATE_GOLDEN: {'rewrote' if changed else 'checked'} {path.name}; "
            "review the diff and rerun without GRADIENCE_UPDATE_GOLDEN"
        )
    assert text == path.read_bytes().decode("utf-8")
    # Same input, same bytes.
    assert render(kind, copy.deepcopy(audit), copy.deepcopy(bench), context=context) == text


def test_status_lines(audit, bench, bench_fail) -> None:
    assert "**✅ PASS**" in render("card", audit, bench)
    assert "**❌ FAIL**" in render("card", audit, bench_fail)
    assert "**ℹ️ Audit only**" in render("card", audit, None)


def test_comment_starts_with_marker(audit, bench) -> None:
    for b in (bench, None):
        assert render("comment", audit, b).startswith(R.COMMENT_MARKER + "\n")


def test_links_relative_in_card_absolute_elsewhere(audit, bench) -> None:
    card = render("card", audit, bench, context=HUB_CONTEXT)
    assert "](gradience/bench.json)" in card and "](gradience/audit.json)" in card
    assert "![LoRA utilization by layer and module](gradience/utilization.png)" in card
    for kind in ("comment", "summary"):
        text = render(kind, audit, bench, context=HUB_CONTEXT)
        assert f"]({REPO_URL}/blob/refs%2Fpr%2F3/gradience/bench.json)" in text
        assert f"]({REPO_URL}/blob/refs%2Fpr%2F3/gradience/audit.json)" in text
        plain = render(kind, audit, bench)
        evidence = plain.split("**Evidence:** ")[1].split("\n")[0]
        assert "`gradience/bench.json`" in evidence and "](" not in evidence


def test_links_follow_a_custom_endpoint(audit) -> None:
    url = "http://127.0.0.1:8123/acme/llama-3.2-1b-sst2-lora"
    text = render("summary", audit, None, context={"repo_url": url, "revision": "abc"})
    assert f"[acme/llama-3.2-1b-sst2-lora]({url})" in text
    assert "](http://127.0.0.1:8123/meta-llama/Llama-3.2-1B)" in text
    assert f"]({url}/blob/abc/gradience/audit.json)" in text


def test_repo_id_from_context(audit) -> None:
    audit = copy.deepcopy(audit)
    audit["source"] = {"kind": "local", "path": "/tmp/x", "display": "/tmp/x"}
    assert "acme/other" not in render("comment", audit, None)
    text = render("comment", audit, None, context={"repo_id": "acme/other"})
    assert "### Gradience ℹ️ Audit only: acme/other" in text
    assert "/tmp/x" not in text


def test_picture_only_when_present(audit) -> None:
    assert "utilization.png" not in render("card", audit, None)
    assert "utilization.png" in render("card", audit, None, context={"utilization_png": True})


def test_generated_at_only_when_given(audit) -> None:
    text = render("card", audit, None, context={"generated_at": "2025-01-15 10:00 UTC"})
    assert "on 2025-01-15 10:00 UTC" in text
    assert "2025" not in render("card", audit, None)


def test_nothing_to_render_and_bad_kind(audit) -> None:
    with pytest.raises(UsageError):
        render("card", None, None)
    with pytest.raises(UsageError):
        render("poster", audit, None)
    with pytest.raises(RecordError):
        render("card", ["not", "a", "dict"], None)  # type: ignore[arg-type]


def test_sparse_bench_renders(audit) -> None:
    """A gradience 0.11 record (its own, sparser schema) renders once its reader has made it a
    judged record; a document that is neither format never reaches a template (exit 2)."""
    bench = {
        "status": "FAIL",
        "variants": [{"name": "r4", "rank": 4, "per_seed": {"1": {"score": 0.5, "delta": -0.1}}}],
    }
    with pytest.raises(RecordError, match=r"not a bench\.json"):
        typed_bench(bench)
    for kind in R.TEMPLATES:
        text = render(kind, None, copy.deepcopy(GRADIENCE_011))
        assert "uniform_median" in text.replace("\\", "") and "✅ PASS" in text


def _scaled(doc: Any, factor: float) -> Any:
    """Every score-valued number of a bench.json (scores, deltas, means) times ``factor``;
    counts, ranks, rates and p-values unchanged. The paired intervals, which count right and
    wrong answers, go: a metric on another scale has none."""
    scaled = {"score", "delta", "mean", "worst_delta"}
    if isinstance(doc, dict):
        out: dict[str, Any] = {}
        for key, value in doc.items():
            if key == "delta_ci":
                continue
            if key == "per_seed" and all(isinstance(v, float) for v in value.values()):
                out[key] = {k: v * factor for k, v in value.items()}  # probe and base scores
            elif key in scaled and isinstance(value, float):
                out[key] = value * factor
            else:
                out[key] = _scaled(value, factor)
        return out
    if isinstance(doc, list):
        return [_scaled(v, factor) for v in doc]
    return doc


def test_raw_metric_scale(bench) -> None:
    """Metrics outside [0, 1] (a loss, a BLEU score) are shown raw, not as percentages."""
    text = render("card", None, _scaled(bench, 100))
    assert "| 91.28 |" in text or "91.28" in text
    assert "91.3%" not in text


# --------------------------------------------------------------------------- filters


def test_filters() -> None:
    assert pct(0.1449) == "14.5%" and pct(None) == "—" and pct("x") == "x"
    assert signed_pct(-0.008) == "-0.8%" and signed_pct(0.004) == "+0.4%"
    assert delta(-0.0092) == "-0.9 pts" and delta(0.025, signed=False) == "2.5 pts"
    assert delta(-1.5, "raw") == "-1.5" and metric(0.9128) == "91.3%"
    assert metric(31.2, "raw") == "31.2"
    assert human(589_800) == "589.8K" and human(512) == "512" and human(7e9) == "7.0B"
    assert num(4.0) == "4" and num(2.345) == "2.3"
    assert ranks({"rank": 4}) == "r=4"
    assert ranks({"rank_pattern": {"a": 2, "b": 8, "c": 4}}) == "r=2–8 per layer"
    assert ranks({"rank_pattern": {"a": 4, "b": 4}}) == "r=4 per layer"
    assert ranks({"rank": "<b>"}) == "—"


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.q_proj"),
        ("<script>", "&lt;script&gt;"),
        ("<!-- gradience:end -->", "&lt;!-- gradience:end --&gt;"),
        ("a|b", "a\\|b"),
        ("x\ny\r\nz", "x y z"),
        ("@everyone hi", "@\u200beveryone hi"),
        ("[x](javascript:alert(1))", "&#91;x&#93;(javascript:alert(1))"),
        ("![img](http://x)", "!&#91;img&#93;(http:\u200b//x)"),
        ("_a_ *b* `c` ~d~ $e$", "\\_a\\_ \\*b\\* \\`c\\` \\~d\\~ \\$e\\$"),
        ("# title", "\\# title"),
        ("see #12 and org/repo#3", "see #\u200b12 and org/repo#\u200b3"),
        ("- item", "\\- item"),
        ("www.evil.example", "www\u200b.evil.example"),
        ("a\\b", "a\\\\b"),
        ("&amp;", "&amp;amp;"),
        ("\u202eevil", "\ufffdevil"),
        (None, "—"),
        (-0.5, "-0.5"),
    ],
)
def test_md_escape(raw: Any, escaped: str) -> None:
    assert md(raw) == escaped
    assert md(md(raw)) == escaped  # Markup passes through: no double escaping


# --------------------------------------------------------------------------- hostile input

HOSTILE = [
    "<!-- gradience:end -->",
    "<!-- gradience:start -->",
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "@everyone",
    "@user",
    "a|b|c",
    "line\nbreak\r\n# heading\n\n| fake | row |",
    "[x](javascript:alert(1))",
    "![img](http://x/track.png)",
    "-->",
    "<!--",
    "`code`",
    "**bold**",
    "org/repo#12",
    "http://evil.example",
    "&lt;b&gt;",
    "\u202eevil",
    "{{ 7*7 }}",
]
HOSTILE_TEXT = " ".join(HOSTILE)


def hostile_documents(audit: dict, bench: dict) -> tuple[dict, dict]:
    """The golden audit and bench with hostile strings wherever a string can come from."""
    audit = copy.deepcopy(audit)
    bench = copy.deepcopy(bench)
    for i, layer in enumerate(audit["layers"]):
        layer["name"] = f"{HOSTILE[i % len(HOSTILE)]}.layers.{layer['layer_index']}.q_proj"
    audit["suggestions"]["per_layer"]["rank_pattern"] = {
        layer["name"]: 4 for layer in audit["layers"]
    }
    audit["source"].update(repo_id=HOSTILE_TEXT, sha=HOSTILE_TEXT, display=HOSTILE_TEXT)
    audit["source"]["base_model"] = HOSTILE_TEXT
    audit["summary"]["base_model"] = HOSTILE_TEXT
    audit["warnings"] = [*HOSTILE, HOSTILE_TEXT]
    for i, variant in enumerate(bench["variants"]):
        variant["name"] = f"{HOSTILE[(3 * i) % len(HOSTILE)]} {HOSTILE_TEXT}"
    bench["variants"][2]["rank_pattern"] = {HOSTILE_TEXT: 4}
    bench["recommendation"]["variant"] = bench["variants"][1]["name"]
    bench["task"].update(name=HOSTILE_TEXT, metric=HOSTILE_TEXT)
    bench["protocol"]["kind"] = HOSTILE_TEXT
    bench["adapter"].update(source=HOSTILE_TEXT, base_model=HOSTILE_TEXT, revision="x")
    bench["tool"] = {"name": HOSTILE_TEXT, "version": HOSTILE_TEXT}
    bench["warnings"] = [HOSTILE_TEXT]
    bench["status_reason"] = HOSTILE_TEXT
    return audit, bench


HOSTILE_VALUES = {
    "protocol.seeds": lambda d: d["protocol"].__setitem__("seeds", [42, 123, HOSTILE_TEXT]),
    "task.eval_examples": lambda d: d["task"].__setitem__("eval_examples", HOSTILE_TEXT),
    "policy.max_drop": lambda d: d["policy"].__setitem__("max_drop", HOSTILE_TEXT),
    "policy.min_pass_rate": lambda d: d["policy"].__setitem__("min_pass_rate", HOSTILE_TEXT),
    "variants[1].verdict": lambda d: d["variants"][1].__setitem__("verdict", HOSTILE_TEXT),
    "status": lambda d: d.__setitem__("status", HOSTILE_TEXT),
    "variants[2].rank_pattern.x": lambda d: d["variants"][2].__setitem__(
        "rank_pattern", {"x": "<b>"}
    ),
    "variants[1].per_seed.42.score": lambda d: d["variants"][1]["per_seed"]["42"].__setitem__(
        "score", HOSTILE_TEXT
    ),
}


@pytest.mark.parametrize("field", sorted(HOSTILE_VALUES))
def test_hostile_values_in_typed_fields_never_reach_a_template(bench, field: str) -> None:
    """Numbers, seeds, verdicts and the status are typed: a string there is refused when the
    record is read (exit 2, naming the field), before any template could show it."""
    HOSTILE_VALUES[field](bench)
    with pytest.raises(RecordError, match=re.escape(field.split(".")[-1])):
        typed_bench(bench)


def unescaped_pipes(line: str) -> int:
    count, i = 0, 0
    while i < len(line):
        if line[i] == "\\":
            i += 2
            continue
        count += line[i] == "|"
        i += 1
    return count


ALLOWED_LINKS = ("https://huggingface.co/", "https://github.com/gradience/", "gradience/")


def assert_inert(text: str, kind: str) -> None:
    """The rendered text cannot escape the section, open HTML, mention, or inject links."""
    body = text.removeprefix(R.COMMENT_MARKER) if kind == "comment" else text
    assert R.SECTION_START not in body and R.SECTION_END not in body
    assert "<" not in body and ">" not in body.replace("&gt;", "")
    assert not re.search(r"@\w", body), re.search(r".{20}@\w.{20}", body)
    assert "](javascript" not in body and "](http://x" not in body
    for target in re.findall(r"(?<!\\)\]\(([^)]*)\)", body):
        assert target.startswith(ALLOWED_LINKS), target
    assert body.count("![") <= 1
    for line in body.splitlines():
        if line.startswith("#"):
            assert re.match(r"#{2,3} (Gradience|Compression bench|Audit|Warnings)", line), line
    # Tables keep their shape: every row has as many cell separators as its header.
    block: list[str] = []
    for line in [*body.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if block:
            assert len({unescaped_pipes(row) for row in block}) == 1, block
        block = []


@pytest.mark.parametrize("kind", sorted(R.TEMPLATES))
@pytest.mark.parametrize("with_context", [False, True])
def test_hostile_strings_cannot_break_out(audit, bench, kind: str, with_context: bool) -> None:
    audit, bench = hostile_documents(audit, bench)
    context = dict(HUB_CONTEXT, repo_id=HOSTILE_TEXT) if with_context else {}
    text = render(kind, audit, bench, context=context)
    assert_inert(text, kind)
    assert "&lt;script&gt;" in text  # the data is shown, escaped, not dropped
    if kind == "card":
        readme = R.splice_readme("# Card\n", text, base_model=HOSTILE_TEXT)
        assert readme.count(R.SECTION_START) == 1 and readme.count(R.SECTION_END) == 1
        assert readme.index(R.SECTION_START) < readme.index(R.SECTION_END)
        front = yaml.safe_load(readme.split("---\n")[1])
        assert front == {"library_name": "peft", "tags": ["lora", "gradience"]}


def test_hostile_strings_with_markdown_parser(audit, bench) -> None:
    """Parse the output as CommonMark + tables: hostile data adds no HTML, link, image,
    emphasis, code or strike-through beyond what the template itself writes."""
    markdown_it = pytest.importorskip("markdown_it")
    parser = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"])
    watched = (
        "html_block",
        "html_inline",
        "link_open",
        "image",
        "em_open",
        "strong_open",
        "s_open",
        "code_inline",
        "heading_open",
        "table_open",
        "tr_open",
        "td_open",
    )

    def census(text: str) -> dict[str, int]:
        counts = dict.fromkeys(watched, 0)
        for token in parser.parse(text):
            for t in [token, *(token.children or [])]:
                if t.type in counts:
                    counts[t.type] += 1
                if t.type == "link_open":
                    assert str(t.attrs["href"]).startswith(ALLOWED_LINKS), t.attrs
                if t.type == "html_block":
                    assert t.content.strip() == R.COMMENT_MARKER
        return counts

    hostile_audit, hostile_bench = hostile_documents(audit, bench)
    audit = dict(audit, warnings=["a plain warning"])  # same sections as the hostile one
    for kind in R.TEMPLATES:
        plain = census(render(kind, audit, bench, context=HUB_CONTEXT))
        hostile = census(render(kind, hostile_audit, hostile_bench, context=HUB_CONTEXT))
        for name in watched:
            if name in ("table_open", "tr_open", "td_open", "heading_open"):
                assert hostile[name] == plain[name], (kind, name)
            else:
                assert hostile[name] <= plain[name], (kind, name, hostile, plain)
        assert plain["html_inline"] == 0 and plain["html_block"] == (kind == "comment")


def test_hostile_user_template_join_and_filters(tmp_path: Path, audit) -> None:
    """Markup-producing builtins are replaced: join/escape/e escape for Markdown."""
    names = ["<b>@x</b>", "a|b", "@all", "[l](javascript:x)"]
    (tmp_path / "card_section.md.j2").write_text(
        "{{ context.names|join(' | ') }}\n{{ context.names[0]|e }}\n"
        "{{ context.names[1]|escape }}\n{{ context.names[2] ~ '!' }}\n"
        "{{ '%s'|format(context.names[3]) }}\n{{ context.names|join(attribute=0) }}\n"
    )
    text = render("card", audit, None, template_dir=tmp_path, context={"names": names})
    assert "<" not in text and not re.search(r"@\w", text)
    assert not re.search(r"(?<!\\)[\[\]]", text)  # every bracket escaped: no link
    assert "a\\|b" in text


def test_safe_in_user_template_cannot_emit_markers(tmp_path: Path, audit) -> None:
    (tmp_path / "card_section.md.j2").write_text("{{ audit.warnings[0]|safe }}\n")
    audit = copy.deepcopy(audit)
    audit["warnings"] = [R.SECTION_END]
    with pytest.raises(TemplateError, match="marker"):
        render("card", audit, None, template_dir=tmp_path)


def test_bad_repo_url_is_refused(audit) -> None:
    with pytest.raises(TemplateError):
        render("comment", audit, None, context={"repo_url": "javascript:alert(1)"})
    text = render("comment", audit, None, context={"repo_url": "https://hf.co/a b(c)"})
    assert "https://hf.co/a%20b%28c%29/blob/main/gradience/audit.json" in text


# --------------------------------------------------------------------------- user templates


def test_user_template_dir_overrides(tmp_path: Path, audit, bench) -> None:
    (tmp_path / "pr_comment.md.j2").write_text("Custom {{ status }}: {{ variants|length }}\n")
    text = render("comment", audit, bench, template_dir=tmp_path)
    assert text == f"{R.COMMENT_MARKER}\nCustom PASS: 3\n"
    # Other templates still come from the package.
    assert render("card", audit, bench, template_dir=tmp_path).startswith("## Gradience")


def test_status_words_are_names_in_templates(tmp_path: Path, audit, bench, bench_fail) -> None:
    (tmp_path / "pr_comment.md.j2").write_text(
        "{% if status == PASS %}ship it{% elif status == FAIL %}keep r{% endif %}\n"
    )
    assert render("comment", audit, bench, template_dir=tmp_path).endswith("\nship it")
    assert render("comment", audit, bench_fail, template_dir=tmp_path).endswith("\nkeep r")


def test_user_template_can_override_macros(tmp_path: Path, audit) -> None:
    (tmp_path / "_macros.md.j2").write_text(
        (Path(R.__file__).parent / "templates" / "_macros.md.j2")
        .read_text()
        .replace("Audit only", "Only audited")
    )
    assert "Only audited" in render("card", audit, None, template_dir=tmp_path)


def test_compiled_ahead_templates_are_not_compiled_again(
    tmp_path: Path, audit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """compile_templates (annotate runs it while the adapter downloads) compiles the card and
    the macros it imports, a user's overrides included, so the render compiles nothing."""
    import jinja2

    (tmp_path / "_macros.md.j2").write_text(
        (Path(R.__file__).parent / "templates" / "_macros.md.j2")
        .read_text()
        .replace("Audit only", "Only audited")
    )
    (tmp_path.parent / "linked").symlink_to(tmp_path)  # both calls resolve it alike
    R.compile_templates("card", tmp_path.parent / "linked")
    compiled: list[str | None] = []
    real = jinja2.Environment.compile

    def counting(self: Any, source: Any, name: str | None = None, *args: Any, **kw: Any) -> Any:
        compiled.append(name)
        return real(self, source, name, *args, **kw)

    monkeypatch.setattr(jinja2.Environment, "compile", counting)
    assert "Only audited" in render("card", audit, None, template_dir=tmp_path.parent / "linked")
    assert compiled == []


def test_a_broken_template_compiled_ahead_is_reported_by_the_render(tmp_path: Path, audit) -> None:
    (tmp_path / "card_section.md.j2").write_text("{% if %}\n")
    R.compile_templates("card", tmp_path)  # says nothing: the render reports it
    R.compile_templates("card", tmp_path / "missing")
    with pytest.raises(TemplateError, match="syntax error") as info:
        render("card", audit, None, template_dir=tmp_path)
    assert info.value.exit_code == 2


def test_strict_undefined_is_a_template_error(tmp_path: Path, audit) -> None:
    (tmp_path / "card_section.md.j2").write_text("line one\n{{ no_such_variable }}\n")
    with pytest.raises(TemplateError, match=r"card_section\.md\.j2:2.*no_such_variable") as info:
        render("card", audit, None, template_dir=tmp_path)
    assert info.value.exit_code == 2


def test_missing_key_is_a_template_error(tmp_path: Path, audit) -> None:
    (tmp_path / "card_section.md.j2").write_text("{{ audit.summary.nope }}\n")
    with pytest.raises(TemplateError, match="undefined"):
        render("card", audit, None, template_dir=tmp_path)


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ audit.__class__.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{% for x in ().__class__.__base__.__subclasses__() %}{{ x }}{% endfor %}",
    ],
)
def test_sandbox_blocks_internals(tmp_path: Path, audit, source: str) -> None:
    (tmp_path / "card_section.md.j2").write_text(source)
    with pytest.raises(TemplateError) as info:
        render("card", audit, None, template_dir=tmp_path)
    assert info.value.exit_code == 2


def test_templates_cannot_mutate_the_documents(tmp_path: Path, audit, bench) -> None:
    (tmp_path / "card_section.md.j2").write_text("{{ bench.variants.clear() }}\n")
    before = copy.deepcopy(bench)
    with pytest.raises(TemplateError, match="sandbox"):
        render("card", audit, bench, template_dir=tmp_path)
    assert bench == before


def test_template_syntax_error(tmp_path: Path, audit) -> None:
    (tmp_path / "card_section.md.j2").write_text("ok\n{% if %}\n")
    with pytest.raises(TemplateError, match=r"card_section\.md\.j2:2: template syntax error"):
        render("card", audit, None, template_dir=tmp_path)


def test_missing_template_dir(tmp_path: Path, audit) -> None:
    with pytest.raises(TemplateError, match="not found"):
        render("card", audit, None, template_dir=tmp_path / "nope")


def test_shipped_templates_are_package_data() -> None:
    names = {p.name for p in (Path(R.__file__).parent / "templates").glob("*.j2")}
    assert {*R.TEMPLATES.values(), "_macros.md.j2"} <= names


# --------------------------------------------------------------------------- splicing

SECTION = "## Gradience\n\nNew **section** text.\n"

ODD_CARD = (
    "---\n"
    "# a YAML comment that must survive\n"
    "license: apache-2.0   # trailing comment\n"
    "library_name: peft\n"
    "base_model: meta-llama/Llama-3.2-1B\n"
    "tags:\n"
    "  - lora\n"
    "  - gradience\n"
    "---\n"
    "\n"
    "# My adapter   \n"
    "\t\n"
    "Some text with trailing spaces.  \n"
    "<!-- other-tool:start -->\nkeep this <b>html</b>\n<!-- other-tool:end -->\n"
    "\n"
    "<!-- gradience:start -->\nold section\n<!-- gradience:end -->\n"
    "\n\n   \n"
    "## After\n"
    "no trailing newline"
)


def split_at_section(text: str) -> tuple[str, str, str]:
    start = text.index(R.SECTION_START) + len(R.SECTION_START)
    end = text.index(R.SECTION_END)
    return text[:start], text[start:end], text[end:]


def test_splice_replaces_only_between_markers() -> None:
    out = R.splice_readme(ODD_CARD, SECTION, base_model="meta-llama/Llama-3.2-1B")
    before, _, after = split_at_section(ODD_CARD)
    new_before, new_inner, new_after = split_at_section(out)
    assert (new_before, new_after) == (before, after)
    assert new_inner == "\n" + SECTION.strip("\n") + "\n"
    assert R.splice_readme(out, SECTION, base_model="meta-llama/Llama-3.2-1B") == out


def test_splice_crlf_bom_and_no_trailing_newline() -> None:
    card = "\ufeff" + ODD_CARD.replace("\n", "\r\n")
    out = R.splice_readme(card, SECTION, base_model=None)
    before, _, after = split_at_section(card)
    new_before, new_inner, new_after = split_at_section(out)
    assert (new_before, new_after) == (before, after)
    assert out.startswith("\ufeff---\r\n")
    assert out.count("\n") == out.count("\r\n")
    assert new_inner == "\r\n## Gradience\r\n\r\nNew **section** text.\r\n"
    assert R.splice_readme(out, SECTION, base_model=None) == out


def test_splice_appends_at_end_of_body() -> None:
    card = "---\nlibrary_name: peft\ntags: [lora, gradience]\n---\n# Title\nno newline"
    out = R.splice_readme(card, SECTION, base_model=None)
    assert out.startswith(card)
    assert out[len(card) :] == f"\n\n{R.SECTION_START}\n{SECTION.strip()}\n{R.SECTION_END}\n"
    assert R.splice_readme(out, SECTION, base_model=None) == out
    out2 = R.splice_readme(card + "\n", SECTION, base_model=None)
    assert out2 == card + f"\n\n{R.SECTION_START}\n{SECTION.strip()}\n{R.SECTION_END}\n"


def test_splice_adds_missing_front_matter_keys_as_text() -> None:
    yaml_text = "# keep me\nlicense: mit  # why\ndatasets:\n- sst2\n"
    card = f"---\n{yaml_text}---\n# Title\n"
    out = R.splice_readme(card, SECTION, base_model="org/base")
    front = out.split("---\n")[1]
    assert front.startswith(yaml_text)  # existing YAML untouched, keys appended
    assert front[len(yaml_text) :] == (
        "library_name: peft\nbase_model: org/base\ntags:\n- lora\n- gradience\n"
    )
    assert out.split("---\n", 2)[2].startswith("# Title\n")
    assert R.splice_readme(out, SECTION, base_model="org/base") == out


@pytest.mark.parametrize(
    "tags_yaml",
    [
        "tags:\n- text-generation\n",
        "tags:\n  - a  # c\n  - lora\n",
        "tags: [a, b]  # flow\n",
        "tags: []\n",
        "tags:\n",
        "tags: just-a-string\n",
    ],
)
def test_splice_keeps_an_existing_tags_key(tags_yaml: str) -> None:
    """Only missing keys are added: an existing tags entry is the author's and stays as is."""
    card = f"---\nlibrary_name: peft\n{tags_yaml}license: mit\n---\nbody\n"
    out = R.splice_readme(card, SECTION, base_model=None)
    assert out.startswith(card)


def test_splice_without_front_matter_adds_one() -> None:
    card = "# Title\n\ntext\n"
    out = R.splice_readme(card, SECTION, base_model="org/base")
    assert out.startswith("---\nlibrary_name: peft\nbase_model: org/base\ntags:\n- lora\n")
    assert f"---\n{card}\n{R.SECTION_START}" in out
    assert R.splice_readme(out, SECTION, base_model="org/base") == out


def test_no_readme_gets_front_matter_and_body() -> None:
    out = R.splice_readme(None, SECTION, base_model="meta-llama/Llama-3.2-1B")
    _, front, body = out.split("---\n", 2)
    assert yaml.safe_load(front) == {
        "library_name": "peft",
        "base_model": "meta-llama/Llama-3.2-1B",
        "tags": ["lora", "gradience"],
    }
    assert body.startswith("\n# LoRA adapter\n")
    assert body.endswith(f"{R.SECTION_START}\n{SECTION.strip()}\n{R.SECTION_END}\n")
    assert R.splice_readme(out, SECTION, base_model="meta-llama/Llama-3.2-1B") == out


@pytest.mark.parametrize("base_model", [None, "/home/me/models/llama", "a..b", "x\nlicense: evil"])
def test_no_readme_without_a_hub_base_model(base_model: str | None) -> None:
    out = R.splice_readme(None, SECTION, base_model=base_model)
    front = yaml.safe_load(out.split("---\n")[1])
    assert front == {"library_name": "peft", "tags": ["lora", "gradience"]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (f"a\n{R.SECTION_START}\nb\n", "no '<!-- gradience:end -->'"),
        (f"a\n{R.SECTION_END}\nb\n", "but no '<!-- gradience:start -->'"),
        (f"{R.SECTION_END}\nx\n{R.SECTION_START}\n", "before"),
        (
            f"{R.SECTION_START}\n{R.SECTION_END}\n{R.SECTION_START}\n{R.SECTION_END}\n",
            "2 gradience start and 2 end",
        ),
        (f"{R.SECTION_START}\n{R.SECTION_START}\n{R.SECTION_END}\n", "expected one section"),
        ("<!--gradience:start-->\nx\n", "no '<!-- gradience:end -->'"),
    ],
)
def test_broken_markers_are_card_errors(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(CardError, match=re.escape(message)) as info:
        R.splice_readme(body, SECTION, base_model=None)
    assert info.value.exit_code == 2
    path = tmp_path / "README.md"
    path.write_bytes(body.encode())
    with pytest.raises(CardError):
        R.splice_readme_file(path, SECTION, base_model=None)
    assert path.read_bytes() == body.encode()  # nothing written
    assert not list(tmp_path.glob(".*tmp"))


def test_section_containing_a_marker_is_refused() -> None:
    with pytest.raises(CardError):
        R.splice_readme("x\n", f"a\n{R.SECTION_END}\n", base_model=None)


def test_tolerant_marker_spacing_is_kept() -> None:
    card = "x\n<!--gradience:start-->\nold\n<!--  gradience:end  -->\ny\n"
    out = R.splice_readme(card, SECTION, base_model=None)
    assert "<!--gradience:start-->\n## Gradience" in out
    assert out.endswith("text.\n<!--  gradience:end  -->\ny\n")


def test_splice_readme_file_bytes(tmp_path: Path) -> None:
    path = tmp_path / "README.md"
    assert R.splice_readme_file(path, SECTION, base_model="org/base") is True
    first = path.read_bytes()
    assert R.splice_readme_file(path, SECTION, base_model="org/base") is False
    assert path.read_bytes() == first
    crlf = ODD_CARD.replace("\n", "\r\n").encode()
    path.write_bytes(crlf)
    R.splice_readme_file(path, SECTION, base_model=None)
    data = path.read_bytes()
    assert data.count(b"\n") == data.count(b"\r\n")
    path.write_bytes(b"\xff\xfe bad")
    with pytest.raises(CardError, match="UTF-8"):
        R.splice_readme_file(path, SECTION, base_model=None)


def test_rendered_card_round_trip(audit, bench) -> None:
    section = render("card", audit, bench, context={"utilization_png": True})
    once = R.splice_readme(ODD_CARD, section, base_model="meta-llama/Llama-3.2-1B")
    assert R.splice_readme(once, section, base_model="meta-llama/Llama-3.2-1B") == once
    assert split_at_section(once)[1] == "\n" + section.strip("\n") + "\n"


def test_wrap_section() -> None:
    assert R.wrap_section("x\n") == f"{R.SECTION_START}\nx\n{R.SECTION_END}\n"


# --------------------------------------------------------------------------- CLI


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GRADIENCE_DEBUG"}
    return subprocess.run(
        [PY, "-m", "gradience_hub", "render", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def test_cli_audit_only_card() -> None:
    result = run_cli("--audit", str(GOLDEN / "audit.json"), "--format", "card")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(R.SECTION_START + "\n## Gradience: LoRA rank audit\n")
    assert result.stdout.endswith(R.SECTION_END + "\n")
    inner = split_at_section(result.stdout)[1]
    assert inner.strip("\n") == load_golden("card_audit_only").replace(
        "![LoRA utilization by layer and module](gradience/utilization.png)\n\n", ""
    ).replace(" · [utilization picture](gradience/utilization.png)", "").strip("\n")


def load_golden(name: str) -> str:
    return (GOLDEN / f"{name}.md").read_text(encoding="utf-8")


def test_cli_comment_and_summary() -> None:
    for fmt in ("comment", "summary"):
        result = run_cli("--audit", str(GOLDEN / "audit.json"), "--format", fmt)
        assert result.returncode == 0, result.stderr
        assert result.stdout == load_golden(f"{fmt}_audit_only")


def test_cli_with_bench() -> None:
    result = run_cli(
        "--bench", str(GOLDEN / "bench_pass.json"), "--audit", str(GOLDEN / "audit.json")
    )
    assert result.returncode == 0, result.stderr
    assert "**✅ PASS**" in result.stdout and "uniform_r4" in result.stdout


# gradience 0.11's canonical bench.json (shared with tests/test_record.py).
GRADIENCE_011 = json.loads((GOLDEN / "gradience_011_bench.json").read_text())


def test_cli_with_gradience_011_bench(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(GRADIENCE_011))
    for fmt in R.TEMPLATES:
        result = run_cli("--bench", str(path), "--format", fmt)
        assert result.returncode == 0, result.stderr
        assert "✅ PASS" in result.stdout and "uniform\\_median" not in result.stdout
        assert "| **uniform_median** | r=2 |" in result.stdout
        assert "Adapter distilbert" not in result.stdout  # 0.11 names only the base model


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((), "render needs a bench.json, an audit.json or both"),
        (("--audit", "missing.json"), "audit.json not found: missing.json"),
        (("--bench", "missing.json"), "bench file not found"),
        (("--audit", str(GOLDEN / "bench_pass.json")), "not a gradience-hub audit.json"),
        (("--audit", str(GOLDEN / "audit.json"), "--format", "poster"), "Invalid value"),
    ],
)
def test_cli_bad_input_exits_2(args: tuple[str, ...], needle: str, tmp_path: Path) -> None:
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert needle in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        ("{{ nope }}\n", "card_section.md.j2:1: undefined in template"),
        ("{{ ''.__class__.__mro__ }}\n", "sandbox"),
        ("{% for %}\n", "template syntax error"),
    ],
)
def test_cli_template_errors_exit_2(tmp_path: Path, template: str, needle: str) -> None:
    (tmp_path / "card_section.md.j2").write_text(template)
    result = run_cli("--audit", str(GOLDEN / "audit.json"), "--template-dir", str(tmp_path))
    assert result.returncode == 2
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_template_dir_override(tmp_path: Path) -> None:
    (tmp_path / "step_summary.md.j2").write_text("status={{ status }}\n")
    result = run_cli(
        "--audit",
        str(GOLDEN / "audit.json"),
        "--format",
        "summary",
        "--template-dir",
        str(tmp_path),
    )
    assert result.returncode == 0 and result.stdout == "status=AUDIT\n"


def test_import_is_light() -> None:
    code = (
        "import sys, gradience_hub.publish.render, gradience_hub.publish.plot;"
        "print(sorted(m for m in ('jinja2', 'matplotlib', 'yaml') if m in sys.modules))"
    )
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_local_base_model_path_is_not_published() -> None:
    """adapter_config.json often names the base model by a local path; the card shows its last
    component only, never the machine's directory layout."""
    audit = load("audit.json")
    audit["source"] = {"kind": "local", "path": ".", "base_model": "/home/alice/models/llama-3-8b/"}
    audit["summary"]["base_model"] = "/home/alice/models/llama-3-8b/"
    card = render("card", audit, None)
    assert "/home/alice" not in card
    assert "llama-3-8b (local checkpoint)" in card.replace("\\", "")


def test_inconclusive_says_so_plainly_with_both_scores(bench: dict[str, Any]) -> None:
    doc = copy.deepcopy(bench)
    # the base model scores within max_drop of the adapter: the record is judged INCONCLUSIVE
    # on reading (a stored status alone decides nothing)
    doc["status"] = "INCONCLUSIVE"
    doc["status_reason"] = "the adapter does not beat its base model beyond noise"
    doc["recommendation"] = None
    doc["base"]["per_seed"] = {"42": 0.9101, "123": 0.9101, "456": 0.9101}
    doc["base"]["mean"] = 0.9101
    gain = doc["probe"]["mean"] - 0.9101
    doc["base"]["gain"].update(mean=gain, n=2616, worse=40, better=47, p_value=0.5199)
    sentence = (
        "The adapter does not beat its base model on this task, so no compression can be "
        "validated: the adapter scores 91.3% accuracy, the base model without it 91.0%."
    )
    for kind in ("card", "comment", "summary"):
        text = render(kind, None, doc)
        assert sentence in text, kind
        assert "⚠️ INCONCLUSIVE" in text and "✅ PASS**" not in text and "PASS:" not in text
    card = render("card", None, doc)
    assert "| base model (no LoRA update) | — | — | — | 91.0% |" in card
    # an unknown status is never shown as a pass: the record is refused when read (exit 2)
    doc["status"] = "MAYBE"
    with pytest.raises(RecordError, match="status must be one of"):
        render("card", None, doc)
