"""A bench record names the adapter it measured (the content hash of gradience_hub.identity),
and annotate and render --audit refuse to publish another adapter's record as this one's: exit
2 naming both, nothing written. Records without the hash (gradience 0.11's, ours before it)
are published with a warning on the card that the link could not be checked."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from gradience_hub.cli import main
from gradience_hub.errors import RecordError, RecordMismatch
from gradience_hub.identity import HASH_KEY, UNCHECKED, check_link, content_sha256
from gradience_hub.record import load_bench, record_from_dict
from tests.factories import adapter_files, llama_like_adapter

GOLDEN = Path(__file__).parent / "golden"
WARNING_ON_CARD = "could not check that this bench record measured this adapter"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def pair(tmp_path: Path) -> dict[str, Any]:
    """The r=8 adapter, its r=4 compression, and the r=8 adapter's PASS record (the golden
    record re-pointed at it: its own source and content hash)."""
    from gradience_hub.compress import compress

    full = llama_like_adapter(tmp_path / "full", n_layers=2, d=32, r=8)
    small = tmp_path / "small"
    compress(str(full), str(small), rank=4)
    record = json.loads((GOLDEN / "bench_pass.json").read_text(encoding="utf-8"))
    record["adapter"].update(
        source="alice/adapter-r8",
        revision="0123456789abcdef0123456789abcdef01234567",
        allocated_rank=8,
        **{
            HASH_KEY: content_sha256(
                full / "adapter_config.json", full / "adapter_model.safetensors"
            )
        },
    )
    path = tmp_path / "bench-r8.json"
    path.write_text(json.dumps(record), encoding="utf-8")
    return {"full": full, "small": small, "record": record, "bench": path}


def _files(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err


# --------------------------------------------------------------------------- the hash


def test_the_hash_is_the_documented_recipe_and_follows_every_byte(tmp_path: Path) -> None:
    adapter = llama_like_adapter(tmp_path / "a", n_layers=1, d=16, r=4)
    config, weights = adapter / "adapter_config.json", adapter / "adapter_model.safetensors"
    # printf 'gradience-adapter/v1\n%s\n%s\n' "$(sha256sum config)" "$(sha256sum weights)"
    recipe = f"gradience-adapter/v1\n{_sha(config.read_bytes())}\n{_sha(weights.read_bytes())}\n"
    first = content_sha256(config, weights)
    assert first == _sha(recipe.encode())
    # a LoRA file without adapter_config.json: "-" in its place
    assert content_sha256(None, weights) == _sha(
        f"gradience-adapter/v1\n-\n{_sha(weights.read_bytes())}\n".encode()
    )
    config.write_bytes(config.read_bytes() + b" ")  # one config byte
    assert content_sha256(config, weights) != first


def test_the_audit_names_the_hash_of_the_files_it_read(tmp_path: Path) -> None:
    from gradience_hub.audit import run_audit

    adapter = llama_like_adapter(tmp_path / "a", n_layers=1, d=16, r=4)
    report = run_audit(str(adapter))
    assert report.source[HASH_KEY] == content_sha256(
        adapter / "adapter_config.json", adapter / "adapter_model.safetensors"
    )


# --------------------------------------------------------------------------- the record


def test_records_round_trip_the_hash_and_old_ones_still_load(pair: dict[str, Any]) -> None:
    record = load_bench(pair["bench"])
    assert record.adapter.content_sha256 == pair["record"]["adapter"][HASH_KEY]
    assert record.to_dict()["adapter"][HASH_KEY] == pair["record"]["adapter"][HASH_KEY]
    old = load_bench(GOLDEN / "bench_pass.json")  # written before the hash: no key at all
    assert old.adapter.content_sha256 is None and old.to_dict()["adapter"][HASH_KEY] is None
    assert load_bench(GOLDEN / "gradience_011_bench.json").adapter.content_sha256 is None


@pytest.mark.parametrize("bad", ["abc", 42, "G" * 64])
def test_a_malformed_hash_is_a_record_error_naming_the_field(
    pair: dict[str, Any], bad: Any
) -> None:
    doc = json.loads(json.dumps(pair["record"]))
    doc["adapter"][HASH_KEY] = bad
    with pytest.raises(RecordError, match=f"adapter.{HASH_KEY} must be 64"):
        record_from_dict(doc)


def test_check_link_matches_warns_or_refuses(pair: dict[str, Any]) -> None:
    from gradience_hub.audit import run_audit

    full, small = run_audit(str(pair["full"])).to_dict(), run_audit(str(pair["small"])).to_dict()
    assert check_link(pair["record"], full) is None
    with pytest.raises(RecordMismatch) as info:
        check_link(pair["record"], small)
    assert info.value.exit_code == 2
    assert "alice/adapter-r8 @ 0123456" in info.value.record_adapter
    assert pair["record"]["adapter"][HASH_KEY][:12] in info.value.record_adapter
    assert small["source"][HASH_KEY][:12] in info.value.adapter
    old = json.loads((GOLDEN / "bench_pass.json").read_text())
    warning = check_link(old, small)
    assert warning and warning.startswith(UNCHECKED) and "carries no adapter hash" in warning
    v011 = record_from_dict(json.loads((GOLDEN / "gradience_011_bench.json").read_text()))
    warning = check_link(v011.to_dict(), small)
    assert warning and "gradience-bench" in warning and "records no adapter hash" in warning
    retrain = {**pair["record"], "protocol": {"kind": "retrain", "seeds": [1]}}
    retrain["adapter"] = {**retrain["adapter"], HASH_KEY: None}
    warning = check_link(retrain, small)
    assert warning and "trained from its bench config" in warning


# --------------------------------------------------------------------------- annotate


def test_annotate_refuses_another_adapter_s_record_and_writes_nothing(
    pair: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    # The case: the r=8 adapter's PASS record on its r=4 compression.
    small = pair["small"]
    before = _files(small)
    code, out, err = _cli(["annotate", str(small), "--bench-json", str(pair["bench"])], capsys)
    assert code == 2, out + err
    assert err.startswith("Error: the bench record measured another adapter: alice/adapter-r8")
    assert pair["record"]["adapter"][HASH_KEY][:12] in err
    assert str(small) in err and "Traceback" not in err and len(err.splitlines()) == 2
    assert _files(small) == before  # no README, no gradience/*


def test_annotate_publishes_the_adapter_s_own_record_without_a_warning(
    pair: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    full = pair["full"]
    code, out, err = _cli(["annotate", str(full), "--bench-json", str(pair["bench"])], capsys)
    assert code == 0, out + err
    readme = (full / "README.md").read_text(encoding="utf-8")
    assert "PASS" in readme and WARNING_ON_CARD not in readme
    published = json.loads((full / "gradience" / "bench.json").read_text())
    assert published["adapter"][HASH_KEY] == pair["record"]["adapter"][HASH_KEY]


@pytest.mark.parametrize("record", ["bench_pass.json", "gradience_011_bench.json"])
def test_a_record_without_the_hash_is_published_with_the_warning_once(
    pair: dict[str, Any], record: str, capsys: pytest.CaptureFixture[str]
) -> None:
    small = pair["small"]
    argv = ["annotate", str(small), "--bench-json", str(GOLDEN / record)]
    code, out, err = _cli(argv, capsys)
    assert code in (0, 1), out + err  # the record's own verdict
    readme = (small / "README.md").read_text(encoding="utf-8")
    assert readme.count(WARNING_ON_CARD) == 1
    warnings = json.loads((small / "gradience" / "bench.json").read_text())["warnings"]
    assert sum(w.startswith(UNCHECKED) for w in warnings) == 1
    # Published again (from the file annotate wrote): still one warning, nothing to commit.
    again = small / "gradience" / "bench.json"
    shutil.copy(again, small.parent / "republish.json")
    code, out, _ = _cli(
        ["annotate", str(small), "--bench-json", str(small.parent / "republish.json")], capsys
    )
    assert (small / "README.md").read_text(encoding="utf-8").count(WARNING_ON_CARD) == 1


def test_annotate_on_the_hub_refuses_before_any_write(
    pair: dict[str, Any], hub_client_env: Any
) -> None:
    from gradience_hub.publish import annotate as ann

    hub = hub_client_env
    hub.create_repo("alice/adapter-r4", adapter_files(pair["small"]), owner="alice")
    hub.clear_requests()
    with pytest.raises(RecordMismatch) as info:
        ann.annotate("alice/adapter-r4", bench_json=str(pair["bench"]))
    assert "alice/adapter-r8" in info.value.record_adapter
    assert "alice/adapter-r4" in info.value.adapter
    assert hub.write_requests() == [] and hub.prs("alice/adapter-r4") == []


# --------------------------------------------------------------------------- render --audit


def test_render_with_the_audit_refuses_another_adapter_s_record(
    pair: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    audits = {}
    for name in ("full", "small"):
        audits[name] = tmp_path / f"{name}-audit.json"
        code, _, err = _cli(["audit", str(pair[name]), "--output", str(audits[name])], capsys)
        assert code == 0, err
    argv = ["render", "--bench", str(pair["bench"]), "--format", "card"]
    code, out, err = _cli([*argv, "--audit", str(audits["small"])], capsys)
    assert code == 2 and out == ""
    assert "measured another adapter: alice/adapter-r8" in err and str(pair["small"]) in err
    code, out, err = _cli([*argv, "--audit", str(audits["full"])], capsys)
    assert code == 0 and WARNING_ON_CARD not in out
    old = ["render", "--bench", str(GOLDEN / "bench_pass.json"), "--audit", str(audits["small"])]
    code, out, err = _cli(old, capsys)
    assert code == 0 and out.count(WARNING_ON_CARD) == 1
    # without --audit there is nothing to check against: the card as before
    code, out, err = _cli(["render", "--bench", str(GOLDEN / "bench_pass.json")], capsys)
    assert code == 0 and WARNING_ON_CARD not in out
