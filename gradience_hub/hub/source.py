"""SOURCE to an opened adapter: a local directory is opened where it is, a Hub repo id is
downloaded first (adapter files only); the readers of :mod:`gradience_hub.adapter` only ever
see a local directory."""

from __future__ import annotations

from gradience_hub.adapter.config import CONFIG_NAME, list_adapters
from gradience_hub.adapter.lorafile import lora_files
from gradience_hub.adapter.source import SourceInfo, parse_source
from gradience_hub.adapter.weights import Adapter, open_adapter
from gradience_hub.errors import AdapterError
from gradience_hub.hub.download import download_adapter


def load_adapter(
    source: str, revision: str | None = None, adapter_name: str | None = None
) -> tuple[Adapter, SourceInfo]:
    """Open SOURCE (local directory, ``org/name``, ``org/name@rev``) as an :class:`Adapter`.

    Hub sources are downloaded first (adapter files only, :func:`.download_adapter`); the
    readers of :mod:`gradience_hub.adapter` open the local directory.
    """
    spec = parse_source(source, revision)
    if spec.local_path is not None:
        adapter = open_adapter(spec.local_path, adapter_name)
        return adapter, SourceInfo(
            kind="local", path=str(adapter.directory), adapter_name=adapter_name
        )
    assert spec.repo_id is not None
    dl = download_adapter(spec.repo_id, spec.revision, adapter_name)
    if dl.path is None or (not list_adapters(dl.path) and not lora_files(dl.path)):
        # what the search skipped is the likeliest reason, so it is the hint
        raise AdapterError(
            f"{spec.repo_id} has no {CONFIG_NAME} and no kohya/diffusers LoRA file at {dl.sha[:7]}",
            hint="; ".join(dl.warnings[-2:])
            or "is this repo a LoRA adapter? (a full model has no adapter_config.json)",
        )
    adapter = open_adapter(dl.path, adapter_name)
    return adapter, SourceInfo(
        kind="hub",
        path=str(adapter.directory),
        repo_id=spec.repo_id,
        revision=spec.revision,
        sha=dl.sha,
        adapter_name=adapter_name,
        warnings=dl.warnings,
    )
