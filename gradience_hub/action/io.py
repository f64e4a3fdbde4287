"""The GitHub Actions runner protocol of ``gradience-hub action``: what comes in, what goes out.

In: the step's inputs, handed over as ``INPUT_<NAME>`` environment variables, validated into
:class:`Settings` (:func:`parse_settings`; a bad one is an :class:`InputError` naming it, exit 2).
Out: workflow commands on stdout (:func:`workflow_command`, escaped by the runner's rules),
``GITHUB_OUTPUT`` and ``GITHUB_STEP_SUMMARY`` (``Channel``), and the secrets that must never
leave the process in clear text (:class:`Secrets`, and the
:class:`~gradience_hub.output.GuardedStream` over stdout/stderr,
both from :mod:`gradience_hub.output`, shared with the CLI).

What the action does with them, the modes, the comment and the exit code, is
:mod:`gradience_hub.action`, which re-exports the public names here. This module imports nothing
beyond the standard library, :mod:`gradience_hub.errors` and :mod:`gradience_hub.output`.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gradience_hub.errors import GradienceError, UsageError
from gradience_hub.output import Secrets, emit_command

INPUTS: dict[str, str] = {
    "repo-id": "",
    "revision": "",
    "mode": "audit",
    "bench-config": "",
    "bench-json": "",
    "bench-executor": "local",
    "bench-flavor": "",
    "hf-token": "",
    # action.yml defaults it to ${{ github.token }}; outside Actions GITHUB_TOKEN stands in.
    "github-token": "",
    "create-pr": "true",
    "comment": "true",
    "fail-on": "fail",
    "max-drop": "",
    "dry-run": "false",
    "strict-records": "false",
    "push-variant": "",
    "push-to": "",
}
"""Every input of action.yml and the default used when GitHub did not pass it (local runs)."""

OUTPUTS = ("status", "utilization", "suggested-rank", "report-path", "hub-pr-url", "comment-url")
"""Every output of action.yml; all of them are written on every run (empty when unknown)."""

MODES = ("audit", "bench", "annotate")
BENCH_EXECUTORS = ("local", "hf-jobs")
FAIL_ON = ("fail", "never")
_TRUE = ("true", "True", "TRUE")
_FALSE = ("false", "False", "FALSE")


class InputError(UsageError):
    """An action input is missing or invalid (exit 2); ``input`` names it."""

    def __init__(self, name: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.input = name


# -- workflow commands (https://docs.github.com/actions/reference/workflow-commands) -----------


def escape_data(text: str) -> str:
    """Escape the message of a workflow command: ``%``, CR and LF (the runner's rules)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """Escape a workflow command property value: the data rules plus ``:`` and ``,``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def workflow_command(name: str, message: str = "", **properties: str) -> str:
    """``::name key=value,...::message`` with everything escaped."""
    props = ",".join(f"{k}={escape_property(v)}" for k, v in properties.items() if v)
    return f"::{name}{' ' + props if props else ''}::{escape_data(message)}"


# -- inputs --------------------------------------------------------------------------------


def read_input(name: str, environ: Mapping[str, str]) -> str:
    """An input's value, stripped: ``INPUT_REPO-ID`` (as GitHub passes it) or ``INPUT_REPO_ID``
    (what ``docker run -e`` and shells allow), else the :data:`INPUTS` default."""
    upper = name.upper()
    for key in (f"INPUT_{upper}", f"INPUT_{upper.replace('-', '_')}"):
        if key in environ:
            return environ[key].strip()
    return INPUTS[name]


def _bool_input(name: str, environ: Mapping[str, str]) -> bool:
    value = read_input(name, environ)
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InputError(
        name, f"input '{name}' must be true or false, not {value!r}", hint=f"{name}: true"
    )


def _lines(value: str) -> list[str]:
    """One item per line, blank lines and ``#`` comments dropped, duplicates removed."""
    items: list[str] = []
    for line in value.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and line not in items:
            items.append(line)
    return items


@dataclass
class Settings:
    """The validated inputs."""

    repo_ids: list[str]
    revision: str | None
    mode: str
    bench_config: str | None
    bench_json: list[str]
    github_token: str
    create_pr: bool
    comment: bool
    fail_on: str
    max_drop: float | None
    dry_run: bool
    strict_records: bool = False
    bench_executor: str = "local"  # local | hf-jobs
    bench_flavor: str | None = None  # hf-jobs hardware (None: the executor's default)
    push_variant: str | None = None  # "" the recommendation, else a variant name
    push_to: str | None = None

    def bench_json_for(self, index: int) -> str | None:
        """The bench.json of the ``index``-th repo: one file for all, or one per repo."""
        if not self.bench_json:
            return None
        return self.bench_json[0] if len(self.bench_json) == 1 else self.bench_json[index]


def parse_settings(environ: Mapping[str, str]) -> Settings:
    """Validate every input; raises :class:`InputError` naming the first bad one."""
    # The order of the steps is the order in which a bad input is reported: keep it.
    repo_ids = _repo_ids(environ)
    mode = _mode(environ)
    fail_on = _fail_on(environ)
    max_drop = _max_drop(environ)
    bench = _bench_inputs(environ, mode, repo_ids)
    push_variant, push_to = _push_inputs(environ, mode, repo_ids, bench.json)
    return Settings(
        push_variant=push_variant,
        push_to=push_to,
        bench_executor=bench.executor,
        bench_flavor=read_input("bench-flavor", environ) or None,
        repo_ids=repo_ids,
        revision=read_input("revision", environ) or None,
        mode=mode,
        bench_config=bench.config,
        bench_json=bench.json,
        github_token=read_input("github-token", environ) or environ.get("GITHUB_TOKEN", ""),
        create_pr=_bool_input("create-pr", environ),
        comment=_bool_input("comment", environ),
        fail_on=fail_on,
        max_drop=max_drop,
        dry_run=_bool_input("dry-run", environ),
        strict_records=bench.strict_records,
    )


def _repo_ids(environ: Mapping[str, str]) -> list[str]:
    """``repo-id``: one or more Hub repo ids or local adapter directories (required)."""
    repo_ids = _lines(read_input("repo-id", environ))
    if not repo_ids:
        raise InputError(
            "repo-id",
            "input 'repo-id' is required: the Hub repo id(s) or local adapter directories to audit",
            hint="with: repo-id: your-org/your-adapter (one per line for several)",
        )
    return repo_ids


def _mode(environ: Mapping[str, str]) -> str:
    """``mode``: one of :data:`MODES` (default ``audit``)."""
    mode = read_input("mode", environ).lower() or "audit"
    if mode not in MODES:
        raise InputError(
            "mode",
            f"input 'mode' must be one of {', '.join(MODES)}, not {mode!r}",
            hint="mode: audit (spectral audit), bench (run a bench config) or annotate "
            "(publish on the Hub)",
        )
    return mode


def _fail_on(environ: Mapping[str, str]) -> str:
    """``fail-on``: one of :data:`FAIL_ON` (default ``fail``)."""
    fail_on = read_input("fail-on", environ).lower() or "fail"
    if fail_on not in FAIL_ON:
        raise InputError(
            "fail-on",
            f"input 'fail-on' must be fail or never, not {fail_on!r}",
            hint="fail-on: never reports a FAIL verdict without failing the step",
        )
    return fail_on


def _max_drop(environ: Mapping[str, str]) -> float | None:
    """``max-drop``: a number in [0, 1), or None when not given."""
    raw_drop = read_input("max-drop", environ)
    if not raw_drop:
        return None
    try:
        max_drop = float(raw_drop)
    except ValueError:
        max_drop = math.nan
    if not (math.isfinite(max_drop) and 0.0 <= max_drop < 1.0):
        raise InputError(
            "max-drop",
            f"input 'max-drop' must be a number in [0, 1), not {raw_drop!r}",
            hint="max-drop: 0.025 allows a 2.5-point drop on the worst seed",
        )
    return max_drop


@dataclass
class _BenchInputs:
    """The validated inputs about a bench: which one to run or reuse, and where."""

    config: str | None
    json: list[str]
    strict_records: bool
    executor: str


def _bench_inputs(environ: Mapping[str, str], mode: str, repo_ids: list[str]) -> _BenchInputs:
    """``bench-config``, ``bench-json``, ``strict-records`` and ``bench-executor``, checked
    against ``mode`` and each other; the files they name must exist."""
    bench_config = read_input("bench-config", environ) or None
    bench_json = _lines(read_input("bench-json", environ))
    _check_bench_sources(mode, repo_ids, bench_config, bench_json)
    _check_files_exist("bench-config", [bench_config] if bench_config else [])
    _check_files_exist("bench-json", bench_json)
    strict_records = _bool_input("strict-records", environ)
    if strict_records:
        from gradience_hub.record import load_bench

        for path in bench_json:
            load_bench(path, strict=True)  # stored verdicts must match their numbers: exit 2
    return _BenchInputs(bench_config, bench_json, strict_records, _bench_executor(environ))


def _check_bench_sources(
    mode: str, repo_ids: list[str], bench_config: str | None, bench_json: list[str]
) -> None:
    """A bench config only where a mode runs one, never beside a bench.json; bench.json
    files one for all repos or one per repo."""
    if mode == "bench" and not bench_config:
        raise InputError(
            "bench-config",
            "input 'bench-config' is required with mode: bench",
            hint="bench-config: path/to/bench.yaml (see examples/), or use mode: audit",
        )
    if bench_config and mode == "audit":
        raise InputError(
            "bench-config",
            "input 'bench-config' needs mode: bench or mode: annotate",
            hint="set mode: bench to run it, or drop bench-config",
        )
    if bench_config and bench_json:
        raise InputError(
            "bench-json",
            "inputs 'bench-config' and 'bench-json' exclude each other",
            hint="bench-config runs a new bench; bench-json reuses a finished one's record",
        )
    if len(bench_json) not in (0, 1, len(repo_ids)):
        raise InputError(
            "bench-json",
            f"input 'bench-json' lists {len(bench_json)} files for {len(repo_ids)} repos",
            hint="give one bench.json for all repos, or one per repo in the order of repo-id",
        )


def _check_files_exist(name: str, paths: list[str]) -> None:
    """Every path input ``name`` gives is a file."""
    for path in paths:
        if not Path(path).is_file():
            raise InputError(
                name,
                f"input '{name}': file {path!r} not found",
                hint="paths are relative to the workspace; check out the repo first "
                "(actions/checkout)",
            )


def _bench_executor(environ: Mapping[str, str]) -> str:
    """``bench-executor``: one of :data:`BENCH_EXECUTORS` (default ``local``)."""
    bench_executor = read_input("bench-executor", environ).lower() or "local"
    if bench_executor not in BENCH_EXECUTORS:
        raise InputError(
            "bench-executor",
            f"input 'bench-executor' must be local or hf-jobs, not {bench_executor!r}",
            hint="bench-executor: hf-jobs runs the cells on Hugging Face GPUs (needs hf-token)",
        )
    return bench_executor


def _push_inputs(
    environ: Mapping[str, str], mode: str, repo_ids: list[str], bench_json: list[str]
) -> tuple[str | None, str | None]:
    """``push-variant`` (recommended, or a variant name) and ``push-to`` (ORG/REPO)."""
    raw, to = read_input("push-variant", environ).strip(), read_input("push-to", environ).strip()
    if not raw and not to:
        return None, None
    hint = "push-variant: recommended (or a variant name) with push-to: org/name"
    if not raw or not to:
        missing = "push-to" if raw else "push-variant"
        raise InputError(missing, "inputs 'push-variant' and 'push-to' go together", hint=hint)
    if mode != "annotate" or len(repo_ids) != 1 or len(bench_json) != 1:
        raise InputError(
            "push-variant",
            "input 'push-variant' needs mode: annotate, one repo-id and its bench-json",
            hint="the bench's output folder (beside bench-json) holds the variants",
        )
    return ("" if raw.lower() in ("recommended", "true") else raw), to


class Channel:
    """Annotations on stdout, outputs and the step summary, all scrubbed of secrets."""

    def __init__(self, environ: Mapping[str, str], secrets: Secrets) -> None:
        self.output_path = environ.get("GITHUB_OUTPUT") or None
        self.summary_path = environ.get("GITHUB_STEP_SUMMARY") or None
        self.secrets = secrets

    def annotate(self, level: str, title: str, exc_or_text: GradienceError | str) -> None:
        if isinstance(exc_or_text, GradienceError):
            text = exc_or_text.message
            if exc_or_text.hint:
                text += f"\nFix: {exc_or_text.hint}"
        else:
            text = exc_or_text
        scrub = self.secrets.scrub
        emit_command(workflow_command(level, scrub(text), title=scrub(title)))

    def outputs(self, values: Mapping[str, str]) -> None:
        """Write every output, each in the multi-line ``name<<DELIMITER`` form."""
        if self.output_path is None:
            return
        with open(self.output_path, "a", encoding="utf-8") as f:
            for name in OUTPUTS:
                value = self.secrets.scrub(values.get(name, ""))
                delimiter = f"ghadelimiter_{uuid.uuid4()}"  # random: no value can end it early
                f.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")

    def summary(self, markdown: str) -> None:
        if self.summary_path is None:
            return
        with open(self.summary_path, "a", encoding="utf-8") as f:
            f.write(self.secrets.scrub(markdown).rstrip("\n") + "\n")
