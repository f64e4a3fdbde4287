"""bench.json: our round trip, gradience 0.11's canonical format, strict errors, bench.md."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from gradience_hub.errors import RecordError
from gradience_hub.policy import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    Pairs,
    Policy,
    decide,
    judge_base,
    judge_variant,
    paired_interval,
)
from gradience_hub.record import (
    SCHEMA,
    AdapterInfo,
    BenchRecord,
    ProbeRecord,
    ProtocolInfo,
    TaskInfo,
    format_table,
    load_bench,
    record_from_dict,
    rejudge,
    save_bench,
    to_markdown,
    with_policy,
)

SEEDS = (42, 123, 456)
PROBE = {42: 0.80, 123: 0.80, 456: 0.80}
BASE = {42: 0.50, 123: 0.50, 456: 0.50}
N = 1000  # examples per seed (distinct per seed: pooled pairs are the sum)


def _pairs(delta: float, worse: int) -> Pairs:
    """Counts on N examples whose mean delta is ``delta``."""
    better = worse + round(delta * N)
    return Pairs(N, worse, better)


def _record(base: dict[int, float] | None = None) -> BenchRecord:
    """Three variants, all PASS under worst-seed, with paired counts and a base control."""
    policy = Policy()
    outcomes = []
    for name, deltas, reduction in (
        ("uniform_median", (-0.025, -0.01, -0.004), 0.5),
        ("uniform_p90", (-0.015, 0.005, 0.01), 0.5),
        ("per_layer", (-0.02, 0.04, 0.04), 0.028),
    ):
        scores = {s: PROBE[s] + d for s, d in zip(SEEDS, deltas, strict=True)}
        seed_pairs = {s: _pairs(d, 30) for s, d in zip(SEEDS, deltas, strict=True)}
        pooled = seed_pairs[42] + seed_pairs[123] + seed_pairs[456]
        outcomes.append(
            judge_variant(
                name,
                PROBE,
                scores,
                policy,
                seed_pairs=seed_pairs,
                pooled=pooled,
                base=base or BASE,
                params=1000,
                param_reduction=reduction,
            )
        )
    control = judge_base(base or BASE, PROBE, Pairs(3 * N, 60, 60 + round(3 * N * 0.3)))
    decision = decide(outcomes, policy, control)
    return BenchRecord.from_decision(
        decision,
        adapter=AdapterInfo("org/adapter", "abc1234", "org/base", 64, 2000),
        task=TaskInfo("embedded-sentiment", "accuracy", N),
        protocol=ProtocolInfo("posthoc", list(SEEDS), {"device": "cpu"}),
        probe=ProbeRecord.from_scores(64, 2000, PROBE),
        ranks={"uniform_median": 32, "uniform_p90": 32, "per_layer": {"a.q": 8, "a.v": 16}},
        audit={"allocated_rank": 64, "lora_params": 2000, "stable_rank_mean": 3.2, "other": 1},
        environment={"python": "3.11"},
    )


def test_a_bench_and_a_load_judge_through_the_same_function() -> None:
    """A record as the bench writes it and the same record re-judged after loading are equal:
    both are made by record.model.judged, so they cannot drift."""
    record = _record()
    assert rejudge(record).to_dict() == record.to_dict()
    loaded = record_from_dict(json.loads(record.to_json()))
    assert loaded.to_dict() == record.to_dict()


def test_round_trip(tmp_path: Path) -> None:
    record = _record()
    path = save_bench(record, tmp_path / "out" / "bench.json")
    assert sorted(p.name for p in path.parent.iterdir()) == ["bench.json"]
    data = json.loads(path.read_text())
    assert data["schema"] == SCHEMA
    assert list(data)[:3] == ["schema", "tool", "created_at"]
    assert data["status"] == PASS and data["status_reason"] is None
    assert data["recommendation"]["variant"] == "uniform_p90"
    median = data["variants"][0]
    assert median["per_seed"]["42"]["delta"] == pytest.approx(-0.025)
    assert median["per_seed"]["42"]["retained_gain"] == pytest.approx(0.275 / 0.3)
    assert median["retained_gain"]["worst"] == pytest.approx(0.275 / 0.3)
    assert median["rank"] == 32 and "rank_pattern" not in median
    assert median["verdicts"] == {"worst-seed": PASS, "non-inferiority": PASS}
    pooled = _pairs(-0.025, 30) + _pairs(-0.01, 30) + _pairs(-0.004, 30)
    expected = paired_interval(pooled)
    assert median["delta_ci"] == {
        "low": expected.low,
        "high": expected.high,
        "level": 0.95,
        "method": "mover-wilson",
        "n": 3000,
        "worse": 90,
        "better": 51,
    }
    assert median["per_seed"]["123"]["delta_ci"]["n"] == N
    assert data["variants"][2]["rank_pattern"] == {"a.q": 8, "a.v": 16}
    assert data["base"]["per_seed"] == {"42": 0.5, "123": 0.5, "456": 0.5}
    assert data["base"]["gain"]["mean"] == pytest.approx(0.3)
    assert data["base"]["gain"]["test"] == "mcnemar-exact"
    widest = max(paired_interval(Pairs(3 * N, 90, b)).half_width for b in (51, 90, 150))
    assert data["noise_floor"]["half_width"] == pytest.approx(widest)
    assert data["policy"] == {
        "rule": "worst-seed",
        "max_drop": 0.025,
        "seed_max_drop": 0.025,
        "min_pass_rate": 1.0,
    }
    assert data["audit"] == {"allocated_rank": 64, "lora_params": 2000, "stable_rank_mean": 3.2}
    assert data["protocol"] == {"kind": "posthoc", "seeds": [42, 123, 456], "device": "cpu"}
    back = load_bench(path)
    assert back.to_dict() == data
    assert back.variant("per_layer").per_seed[456].score == pytest.approx(0.84)


def test_recommendation_tie_prefers_smaller_drop() -> None:
    record = _record()
    # uniform_median and uniform_p90 both save 50%; p90's worst drop (-1.5) beats median's (-2.5)
    assert record.recommendation is not None
    assert record.recommendation.variant == "uniform_p90"


# A canonical bench.json as gradience 0.11's gradience-bench writes it (single seed), built from
# its documented fields: bench_version, probe, compressed.<variant>, summary.
GRADIENCE_011 = json.loads(
    (Path(__file__).parent / "golden" / "gradience_011_bench.json").read_text()
)

# The multi-seed aggregate shape: metrics as {mean, std, values}, no per-variant verdict.
GRADIENCE_011_AGGREGATE = {
    "bench_version": "0.1",
    "timestamp": "2024-01-15T12:45:30Z",
    "seeds": [42, 43, 44],
    "model": "microsoft/DialoGPT-small",
    "task": "gsm8k/main",
    "probe": {
        "rank": 16,
        "accuracy": {"mean": 0.21, "std": 0.01, "values": [0.22, 0.20, 0.21]},
        "params": {"mean": 442368.0, "std": 0.0},
    },
    "compressed": {
        "uniform_median": {
            "rank": 8,
            "accuracy": {"mean": 0.2, "values": [0.21, 0.19, 0.20]},
            "delta_vs_probe": {"mean": -0.01, "values": [-0.01, -0.01, -0.01]},
            "param_reduction": {"mean": 0.5, "values": [0.5, 0.5, 0.5]},
            "pass_rate": 1.0,
            "verdict_distribution": {"PASS": 3, "FAIL": 0},
        },
        "uniform_r2": {
            "rank": 2,
            "accuracy": {"mean": 0.17, "values": [0.16, 0.18, 0.17]},
            "delta_vs_probe": {"mean": -0.04, "values": [-0.06, -0.02, -0.04]},
            "param_reduction": {"mean": 0.875, "values": [0.875, 0.875, 0.875]},
            "pass_rate": 0.33,
            "verdict_distribution": {"PASS": 1, "FAIL": 2},
        },
    },
    "summary": {"best_compression": {"variant": "uniform_median", "param_reduction_mean": 0.5}},
}


def test_reads_gradience_011_canonical(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(GRADIENCE_011))
    record = load_bench(path)
    assert record.tool == {"name": "gradience-bench", "version": "0.1"}
    assert record.protocol.kind == "retrain" and record.protocol.seeds == [42]
    assert record.task.name == "glue/sst2" and record.task.metric == "accuracy"
    assert record.task.eval_examples == 500
    assert record.policy.max_drop == 0.025
    assert record.probe.rank == 32 and record.probe.params == 1771778
    assert record.probe.per_seed == {42: 0.832} and record.probe.mean == 0.832
    assert [v.name for v in record.variants] == ["uniform_median", "uniform_p90", "per_layer"]
    median = record.variant("uniform_median")
    assert median.rank == 2 and median.params == 665858 and median.param_reduction == 0.624
    assert median.per_seed[42].score == 0.826 and median.per_seed[42].delta == -0.006
    assert median.worst_delta == -0.006 and median.pass_rate == 1.0
    assert median.p_value == 1.0 and median.p_value_test == "sign-test-seeds"  # one seed
    assert record.variant("uniform_p90").verdict == "FAIL"
    assert record.variant("per_layer").rank is None
    assert record.status == PASS
    assert record.recommendation is not None
    assert (record.recommendation.variant, record.recommendation.param_reduction) == (
        "uniform_median",
        0.624,
    )
    assert record.audit["suggested_r_global_median"] == 2 and record.audit["allocated_rank"] == 32
    assert record.environment == {"python": "3.12.1", "torch": "2.9.1", "peft": "0.18.1"}
    # no per-example pairs and no base control in 0.11's format: no interval, no INCONCLUSIVE
    assert record.noise_floor is None and record.base is None
    assert median.verdicts == {"worst-seed": PASS, "non-inferiority": None}
    assert record.warnings == []  # its stored verdicts agree with its numbers
    # and it converts to our schema losslessly from there on
    again = record_from_dict(json.loads(record.to_json()))
    assert again.to_dict() == record.to_dict()
    assert "uniform_median (r=2)" in to_markdown(record)


def test_reads_gradience_011_aggregate() -> None:
    record = record_from_dict(copy.deepcopy(GRADIENCE_011_AGGREGATE))
    assert record.protocol.seeds == [42, 43, 44]
    assert record.probe.per_seed == {42: 0.22, 43: 0.20, 44: 0.21}
    assert record.probe.params == 442368
    median = record.variant("uniform_median")
    assert median.per_seed[44].delta == -0.01 and median.mean == pytest.approx(0.2)
    assert median.verdict == PASS and median.pass_rate == 1.0
    assert median.param_reduction == 0.5 and median.params is None
    r2 = record.variant("uniform_r2")
    assert r2.worst_delta == -0.06 and r2.verdict == "FAIL"
    assert record.status == PASS and record.recommendation.variant == "uniform_median"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("probe"), "probe"),
        (lambda d: d["probe"].pop("rank"), "probe.rank"),
        (lambda d: d["probe"].pop("accuracy"), "probe.accuracy"),
        (lambda d: d.pop("compressed"), "compressed"),
        (lambda d: d.pop("summary"), "summary"),
        (lambda d: d["compressed"]["uniform_p90"].pop("delta_vs_probe"), "uniform_p90.delta"),
        (lambda d: d["compressed"]["uniform_p90"].pop("verdict"), "uniform_p90.verdict"),
        (lambda d: d["compressed"]["per_layer"].pop("accuracy"), "per_layer.accuracy"),
        (lambda d: d["compressed"]["uniform_median"].update(accuracy="high"), "median.accuracy"),
    ],
)
def test_gradience_011_missing_field_names_it(mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    data = copy.deepcopy(GRADIENCE_011)
    mutate(data)
    with pytest.raises(RecordError) as info:
        record_from_dict(data)
    expected = field.replace("median.", "uniform_median.").replace(".delta", ".delta_vs_probe")
    assert expected.split(".")[-1] in info.value.message
    assert expected.split(".")[0] in info.value.message
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (("variants", 1, "worst_delta"), "variants[1].worst_delta"),
        (("variants", 0, "verdict"), "variants[0].verdict"),
        (("variants", 2, "per_seed", "42", "delta"), "variants[2].per_seed.42.delta"),
        (("probe", "mean"), "probe.mean"),
        (("policy", "max_drop"), "policy.max_drop"),
        (("status",), "status"),
        (("noise_floor",), "noise_floor"),
        (("adapter", "source"), "adapter.source"),
    ],
)
def test_ours_missing_field_names_it(path: tuple, field: str) -> None:
    data = _record().to_dict()
    target = data
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    with pytest.raises(RecordError, match=field.replace("[", r"\[").replace("]", r"\]")):
        record_from_dict(data)


def test_bad_values_and_files(tmp_path: Path) -> None:
    data = _record().to_dict()
    data["variants"][0]["verdict"] = "MAYBE"
    with pytest.raises(RecordError, match=r"variants\[0\]\.verdict"):
        record_from_dict(data)
    data = _record().to_dict()
    data["policy"]["max_drop"] = -1
    with pytest.raises(RecordError, match="policy"):
        record_from_dict(data)
    with pytest.raises(RecordError, match=r"not a bench\.json"):
        record_from_dict({"schema": "something/else"})
    with pytest.raises(RecordError, match="not found"):
        load_bench(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(RecordError, match="not valid JSON"):
        load_bench(tmp_path / "bad.json")


TABLE = """\
Variant                    Compression  Mean acc  Worst Δ   Status
uniform_median (r=32)      50%          78.7%     -2.5 pts  PASS
uniform_p90 (r=32)         50%          80.0%     -1.5 pts  PASS
per_layer (audit-guided)   2.8%         82.0%     -2.0 pts  PASS
"""


def _markdown(record: BenchRecord) -> str:
    """bench.md as the reader should see it, spelled out from the record's numbers."""
    ci = {v.name: v.delta_ci for v in record.variants}
    assert record.base is not None and record.base.p_value is not None

    def interval(name: str) -> str:
        c = ci[name]
        assert c is not None
        return f"[{c.low * 100:+.1f} pts, {c.high * 100:+.1f} pts]"

    gains = {v.name: f"{v.retained_gain_worst:.2f}" for v in record.variants}
    return f"""\
# Compression bench: PASS

uniform_p90 (r=32) passes the policy with 50% fewer LoRA parameters.

- Recommendation: uniform_p90 (r=32), 50% fewer LoRA parameters
- Policy: worst-seed (deciding): worst-seed drop at most 2.5 points, on every seed; \
non-inferiority (recorded): pooled 95% interval's lower bound at least -2.5 points
- Protocol: posthoc, seeds 42, 123, 456
- Task: embedded-sentiment (accuracy, 1000 eval examples per seed); noise floor \
±{record.noise_floor * 100:.1f} points (paired 95% interval)
- Uncompressed adapter: r=64, 80.0% mean
- Base model (no LoRA update): 50.0% mean, adapter gain +30.0 pts (exact paired test \
p = {record.base.p_value:.2g})

| Variant | Compression | Mean acc | Worst Δ | Retained gain (worst) | Pooled Δ, 95% interval \
| Status |
|---|---:|---:|---:|---:|---|---|
| uniform_median (r=32) | 50% | 78.7% | -2.5 pts | {gains["uniform_median"]} | \
{interval("uniform_median")} | PASS |
| uniform_p90 (r=32) | 50% | 80.0% | -1.5 pts | {gains["uniform_p90"]} | \
{interval("uniform_p90")} | PASS |
| per_layer (audit-guided) | 2.8% | 82.0% | -2.0 pts | {gains["per_layer"]} | \
{interval("per_layer")} | PASS |
"""


def test_markdown() -> None:
    record = _record()
    assert format_table(record) == TABLE
    assert to_markdown(record) == _markdown(record)
    assert _markdown(record).count("0.92") == 1  # uniform_median keeps 0.275 / 0.3 of the gain
    record.status = FAIL
    record.recommendation = None
    record.warnings = ["max_drop is below the noise floor"]
    text = to_markdown(record)
    assert text.startswith("# Compression bench: FAIL")
    assert "Recommendation: none" in text
    assert text.endswith("- Warning: max_drop is below the noise floor\n")


def test_inconclusive_record_says_so_with_both_scores() -> None:
    record = _record(base={s: 0.79 for s in SEEDS})  # the adapter gains 1 point: below 2.5
    assert record.status == INCONCLUSIVE and record.recommendation is None
    text = to_markdown(record)
    assert text.startswith("# Compression bench: INCONCLUSIVE\n")
    assert (
        "Inconclusive: the adapter does not beat its base model on this task, so no compression "
        "can be validated (adapter 80.0% vs base model 79.0% accuracy)." in text
    )
    assert "- Recommendation: none (no compression can be validated)" in text
    assert record.status_reason is not None and "below max_drop" in record.status_reason


def test_with_policy_rejudges_the_same_measurements() -> None:
    record = _record()
    strict = with_policy(record, max_drop=0.02)
    assert record.policy.max_drop == 0.025 and record.status == PASS  # input untouched
    assert strict.policy.max_drop == 0.02
    verdicts = {v.name: v.verdict for v in strict.variants}
    assert verdicts == {"uniform_median": FAIL, "uniform_p90": PASS, "per_layer": PASS}
    assert strict.variant("uniform_median").pass_rate == pytest.approx(2 / 3)
    assert strict.recommendation is not None and strict.recommendation.variant == "uniform_p90"
    assert [v.p_value for v in strict.variants] == [v.p_value for v in record.variants]
    assert [v.delta_ci for v in strict.variants] == [v.delta_ci for v in record.variants]
    # a max_drop below the widest paired half-width brings the noise-floor warning
    assert record.noise_floor is not None and 0.005 < record.noise_floor < 0.02
    tight = with_policy(record, max_drop=0.005)
    assert tight.status == FAIL and tight.recommendation is None
    assert len(tight.warnings) == 1 and "cannot resolve the tolerance" in tight.warnings[0]
    assert with_policy(tight, max_drop=0.025).warnings == []
    # the non-inferiority rule judges the pooled intervals
    ni = with_policy(record, rule="non-inferiority")
    assert ni.policy.rule == "non-inferiority"
    for v in ni.variants:
        assert v.delta_ci is not None
        assert v.verdict == (PASS if v.delta_ci.low >= -0.025 else FAIL)
    # gradience 0.11 records are re-judged from their recorded figures too
    old = with_policy(record_from_dict(copy.deepcopy(GRADIENCE_011)), max_drop=0.005)
    assert {v.name: v.verdict for v in old.variants} == {
        "uniform_median": FAIL,
        "uniform_p90": FAIL,
        "per_layer": PASS,
    }
    assert old.recommendation is not None and old.recommendation.variant == "per_layer"
    from gradience_hub.errors import ConfigError

    with pytest.raises(ConfigError, match="max_drop"):
        with_policy(record, max_drop=-1)


# --------------------------------------------------------------------------- re-judging


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from gradience_hub.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err


def _forged_pass(tmp_path: Path) -> Path:
    """A record that says PASS while every variant fails the policy on its own numbers."""
    data = _record().to_dict()
    for v in data["variants"]:
        for cell in v["per_seed"].values():
            cell["score"] -= 0.05
            cell["delta"] -= 0.05
            cell.pop("delta_ci")
        v["delta_ci"] = None
        v["verdict"] = "PASS"
    data["status"] = "PASS"
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(data))
    return path


def test_a_forged_pass_is_rejudged_and_refused_under_strict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _forged_pass(tmp_path)
    record = load_bench(path)
    assert record.status == FAIL and record.recommendation is None
    assert {v.verdict for v in record.variants} == {FAIL}
    assert any("stored verdicts disagree" in w and "status PASS (recomputed FAIL)" in w
               for w in record.warnings)  # fmt: skip
    with pytest.raises(RecordError, match="stored verdicts disagree") as info:
        load_bench(path, strict=True)
    assert info.value.exit_code == 2
    code, out, err = _cli(["render", "--bench", str(path), "--format", "summary"], capsys)
    assert code == 0 and "❌ FAIL" in out and "✅ PASS" not in out
    assert "stored verdicts disagree" in out
    code, out, err = _cli(["render", "--bench", str(path), "--strict"], capsys)
    assert code == 2 and out == "" and "stored verdicts disagree" in err
    assert len(err.strip().splitlines()) == 2  # the message and the hint, no traceback


def test_a_pass_rate_that_does_not_match_is_a_warning_or_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _record().to_dict()
    data["variants"][0]["pass_rate"] = 2 / 3  # possible for 3 seeds, but every seed passed
    path = tmp_path / "rate.json"
    path.write_text(json.dumps(data))
    record = load_bench(path)
    assert record.variants[0].pass_rate == 1.0
    assert any("pass rate 0.6666666666666666 (recomputed 1.0)" in w for w in record.warnings)
    code, _, err = _cli(["render", "--bench", str(path), "--strict"], capsys)
    assert code == 2 and "pass rate" in err
    # a pass rate that no number of seeds gives is an inconsistent record: always exit 2
    data["variants"][0]["pass_rate"] = 0.5
    path.write_text(json.dumps(data))
    code, out, err = _cli(["render", "--bench", str(path)], capsys)
    assert code == 2 and out == ""
    assert "pass rate 0.5 cannot come from 3 seed(s)" in err


def test_gradience_011_records_are_rejudged_the_same_way(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = copy.deepcopy(GRADIENCE_011)
    data["compressed"]["uniform_p90"]["verdict"] = "PASS"  # its delta is -10.2 points
    data["compressed"]["uniform_p90"]["param_reduction"] = 0.9  # so it would be recommended
    data["summary"]["best_compression"] = "uniform_p90"
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    record = load_bench(path)
    assert record.variant("uniform_p90").verdict == FAIL
    assert record.recommendation is not None and record.recommendation.variant == "uniform_median"
    assert any("uniform_p90 verdict PASS (recomputed FAIL)" in w for w in record.warnings)
    code, _, err = _cli(["render", "--bench", str(path), "--strict"], capsys)
    assert code == 2 and "uniform_p90 verdict PASS" in err


def test_an_inconsistent_delta_or_interval_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _record().to_dict()
    data["variants"][1]["per_seed"]["42"]["delta"] = 0.0  # score - probe is -0.015
    path = tmp_path / "delta.json"
    path.write_text(json.dumps(data))
    code, out, err = _cli(["render", "--bench", str(path)], capsys)
    assert code == 2 and out == "" and "seed 42's delta is 0.0" in err
    data = _record().to_dict()
    data["variants"][0]["delta_ci"]["low"] = -0.001  # not what its counts give
    path.write_text(json.dumps(data))
    code, out, err = _cli(["render", "--bench", str(path)], capsys)
    assert code == 2 and "variants[0].delta_ci.low" in err


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["variants"][0].update(params=10**400), "variants[0].params is out of range"),
        (lambda d: d["probe"].update(params=10**400), "probe.params is out of range"),
        (lambda d: d["protocol"].update(seeds=None), "protocol.seeds must be a list"),
        (lambda d: d["variants"][0]["per_seed"]["42"].update(score=10**400), "out of range"),
    ],
)
def test_malformed_numbers_are_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mutate,
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    data = _record().to_dict()
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    code, out, err = _cli(["render", "--bench", str(path)], capsys)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 2


HOSTILE = [
    "<script>alert(1)</script>",
    "![x](https://evil.example/p.png)",
    "[click](javascript:alert(1))",
    "@octocat #123",
    "```\n# injected heading",
    "::error file=x::pwned",
    "a|b\n- list",
]


def test_bench_md_escapes_every_untrusted_string() -> None:
    import re

    record = _record()
    for i, v in enumerate(record.variants):
        v.name = HOSTILE[i]
    record.recommendation = None
    record.task.name = HOSTILE[3]
    record.task.metric = HOSTILE[4]
    record.protocol.kind = HOSTILE[1]
    record.warnings = list(HOSTILE)
    text = to_markdown(record)
    assert "<script" not in text and "<" not in text.replace("&lt;", "")
    assert "](" not in text and "![" not in text  # no link or image can open
    assert "@octocat" not in text and "#123" not in text  # no mention, no issue reference
    assert "```" not in text  # no fence break-out
    for line in text.splitlines():
        # every line starts with our own text, never with untrusted data
        assert re.match(r"(# Compression bench|- |\| |\|---|[A-Za-z]|$)", line), line
        assert not line.startswith("::")
    table_rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert all(row.count(" | ") == 6 for row in table_rows[1:])  # "a|b" cannot add a cell
