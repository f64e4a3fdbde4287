"""Downloads: an adapter's files only (never a base model's shards), the kohya/diffusers LoRA
file of a repo without adapter_config.json chosen by bounded header probes, and a bench's files
by pattern."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradience_hub.adapter.lorafile import is_lora_file
from gradience_hub.hub.client import hub_errors, passed_token, reason

# What snapshot_download fetches: an adapter's files only, never a base model's shards.
ADAPTER_FILES = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
    "README.md",
)


@dataclass(frozen=True)
class Download:
    """A downloaded adapter snapshot: local directory (None when the repo's listing holds no
    adapter file, so nothing was downloaded), the commit sha it came from, and what choosing
    its LoRA file skipped or left unprobed (warnings for the report)."""

    path: Path | None
    repo_id: str
    revision: str | None
    sha: str
    warnings: tuple[str, ...] = ()


def download_adapter(
    repo_id: str, revision: str | None = None, adapter_name: str | None = None
) -> Download:
    """Download only an adapter's files from the Hub at ``revision`` (default branch if None).

    The revision is resolved to a commit sha first, so the files and the reported sha are
    guaranteed to match even when the branch moves during the download.
    """
    from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
    from huggingface_hub.utils import filter_repo_objects

    patterns = list(ADAPTER_FILES)
    if adapter_name and adapter_name != "default":
        patterns = [f"{adapter_name}/{name}" for name in ADAPTER_FILES]
    elif adapter_name is None:
        patterns += [f"*/{name}" for name in ADAPTER_FILES if name != "README.md"]
    with hub_errors(repo_id, revision):
        token = passed_token()
        if constants.HF_HUB_OFFLINE:
            cached = Path(
                snapshot_download(repo_id, revision=revision, allow_patterns=patterns, token=token)
            )
            return Download(path=cached, repo_id=repo_id, revision=revision, sha=cached.name)
        api = HfApi(token=token)
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
        sha = info.sha or (revision or "")
        files = {s.rfilename: s.size for s in info.siblings or []}
        warnings: list[str] = []
        lora = None
        if adapter_name is None and not any(f.endswith(ADAPTER_FILES[0]) for f in files):
            lora = _lora_file(api, repo_id, sha, files, warnings)
        wanted = [
            f for f in filter_repo_objects(files, allow_patterns=patterns) if f != "README.md"
        ]
        path: Path | None = None  # no adapter file in the listing: nothing worth downloading
        if lora is not None:
            # a kohya/diffusers LoRA repo: that one file and the card, by name. Not through
            # snapshot_download, which pages through the whole tree listing (a request per
            # thousand files) to match its patterns; the listing above already named them.
            for name in [n for n in ("README.md", lora) if n in files]:
                local = hf_hub_download(repo_id, name, revision=sha, token=token)
            path = Path(local).parent  # the snapshot folder of ``sha``: both are top level
        elif wanted:
            path = Path(
                snapshot_download(repo_id, revision=sha, allow_patterns=patterns, token=token)
            )
    return Download(
        path=path, repo_id=repo_id, revision=revision, sha=sha, warnings=tuple(warnings)
    )


# A LoRA file is a few MB to ~1.5 GB (SDXL at rank 256 in fp32); base models are larger, and
# their files have these names (diffusers' components, transformers' shards). Below the minimum
# a file cannot hold one pair of named factors (8-byte length + a header naming two tensors).
MAX_LORA_FILE_BYTES = 2 * 1024**3
MIN_LORA_FILE_BYTES = 64
_BASE_MODEL_FILE = re.compile(
    r"(^|/)(diffusion_pytorch_model|model)([.-].*)?\.safetensors$|-of-\d+\.safetensors$"
)
# Header reads (Range requests) per repo: each is a request to the Hub, a webhook push repeats
# them, and the Hub answers 429 long before thousands. Files named like a LoRA are read first.
MAX_HEADER_PROBES = 8
PREFERRED_LORA_FILE = "pytorch_lora_weights.safetensors"
_LORA_NAME = re.compile(r"lora", re.IGNORECASE)


def lora_file_candidates(files: dict[str, int | None]) -> list[str]:
    """The files of a listing (path -> size) that may be a kohya/diffusers LoRA file, in the
    order to probe them: top-level ``*.safetensors`` between :data:`MIN_LORA_FILE_BYTES` and
    :data:`MAX_LORA_FILE_BYTES` that are not base-model files,
    ``pytorch_lora_weights.safetensors`` first, then names containing "lora", then the rest,
    each by name."""
    names = sorted(
        f
        for f, size in files.items()
        if f.endswith(".safetensors")
        and "/" not in f
        and not _BASE_MODEL_FILE.search(f)
        and (size is None or MIN_LORA_FILE_BYTES <= size <= MAX_LORA_FILE_BYTES)
    )
    return sorted(names, key=lambda f: (f != PREFERRED_LORA_FILE, not _LORA_NAME.search(f), f))


def _lora_file(
    api: Any, repo_id: str, sha: str, files: dict[str, int | None], warnings: list[str]
) -> str | None:
    """The LoRA weight file of a repo without adapter_config.json, chosen from its file listing
    (:func:`lora_file_candidates`): ``pytorch_lora_weights.safetensors`` by name, the others
    when their header's tensor names are kohya or diffusers LoRA keys, read with a Range
    request (the weights of a file that is not chosen are never downloaded), at most
    :data:`MAX_HEADER_PROBES` of them. A file whose header cannot be parsed is skipped with a
    warning in ``warnings``: a file we only sniff never fails the run."""
    from huggingface_hub.errors import SafetensorsParsingError

    candidates = lora_file_candidates(files)
    if candidates and candidates[0] == PREFERRED_LORA_FILE:
        return PREFERRED_LORA_FILE
    for name in candidates[:MAX_HEADER_PROBES]:
        try:
            header = api.parse_safetensors_file_metadata(repo_id, name, revision=sha)
            tensor_names = [str(key) for key in header.tensors]
        # huggingface_hub turns only KeyError/IndexError/bad JSON into SafetensorsParsingError;
        # a header that is valid JSON of another shape ({"x": 1}, a list, null, non-list
        # data_offsets) fails in its dataclasses with TypeError/AttributeError, an integer past
        # Python's digit limit with ValueError, deep nesting with RecursionError. HTTP errors
        # are not among these: they are the Hub failing, reported as such (exit 3).
        except (
            SafetensorsParsingError,
            TypeError,
            ValueError,
            AttributeError,
            RecursionError,
        ) as exc:
            warnings.append(f"skipped {name}: its safetensors header cannot be read ({_why(exc)})")
            continue
        if is_lora_file(tensor_names):
            return name
    unprobed = len(candidates) - MAX_HEADER_PROBES
    if unprobed > 0:
        warnings.append(
            f"{unprobed} of {len(candidates)} .safetensors files were not probed: at most "
            f"{MAX_HEADER_PROBES} headers are read per repo, names containing 'lora' first; "
            "download the LoRA file and audit it as a local path"
        )
    return None


def _why(exc: BaseException) -> str:
    """A header parse failure in a few words, without the client's repo/revision context."""
    if isinstance(exc, RecursionError):
        return "it is nested too deeply"
    if isinstance(exc, (TypeError, AttributeError)):
        return "it is JSON, but its entries are not tensor descriptions"
    # "Failed to parse safetensors header for 'f' (repo 'r', revision 's'): header is not ..."
    text = reason(exc).split("): ", 1)[-1]
    return text.split(". ", 1)[0][:160]


def download_files(repo_id: str, revision: str, patterns: list[str], local_dir: Path) -> Path:
    """Download the files of ``repo_id``@``revision`` matching ``patterns`` into
    ``local_dir`` (their repo paths kept)."""
    from huggingface_hub import snapshot_download

    with hub_errors(repo_id, revision):
        snapshot_download(
            repo_id, revision=revision, allow_patterns=patterns, local_dir=str(local_dir)
        )
    return local_dir
