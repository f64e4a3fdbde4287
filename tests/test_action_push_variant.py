"""The Action's push-variant and push-to inputs: read, checked (exit 2 naming the input) and
passed to annotate (which pushes the variant after the evidence: test_hub_eval_annotate.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradience_hub.action.io import InputError, parse_settings

BENCH = str(Path(__file__).resolve().parents[1] / "demo-output" / "bench.json")


def _env(**inputs: str) -> dict[str, str]:
    base = {"repo-id": "alice/adapter", "mode": "annotate", "bench-json": BENCH}
    return {f"INPUT_{k.upper()}": v for k, v in {**base, **inputs}.items()}


def test_push_inputs_are_read() -> None:
    settings = parse_settings(_env(**{"push-variant": "recommended", "push-to": "alice/small"}))
    assert (settings.push_variant, settings.push_to) == ("", "alice/small")
    named = parse_settings(_env(**{"push-variant": "uniform_p90", "push-to": "alice/small"}))
    assert named.push_variant == "uniform_p90"
    assert parse_settings(_env()).push_variant is None


@pytest.mark.parametrize(
    ("inputs", "name"),
    [
        ({"push-variant": "recommended"}, "push-to"),
        ({"push-to": "alice/small"}, "push-variant"),
        (
            {"push-variant": "recommended", "push-to": "a/b", "mode": "audit", "bench-json": ""},
            "push-variant",
        ),
        ({"push-variant": "recommended", "push-to": "a/b", "repo-id": "a/x\nb/y"}, "push-variant"),
    ],
)
def test_push_inputs_are_refused_naming_the_input(inputs: dict[str, str], name: str) -> None:
    with pytest.raises(InputError) as info:
        parse_settings(_env(**inputs))
    assert info.value.input == name
