"""A base model on the Hub, read tensor by tensor with HTTP Range requests (for UDR).

huggingface_hub gives the tensors and their offsets: ``get_safetensors_metadata`` for a
transformers checkpoint (its ``model.safetensors`` or the shard index and every shard's header),
``parse_safetensors_file_metadata`` for the shards of a diffusers pipeline's component folders.
The offsets it reports are relative to the data that follows a shard's header; the header's
length is the shard's size (from the file listing) less 8 and less the end of its last tensor,
so no request is spent on it. Each targeted tensor is then one Range request of exactly its
bytes: no shard is ever downloaded whole. The revision is resolved to a commit first, so every
read sees the same files and the norms cache is keyed by that commit.
"""

from __future__ import annotations

import json
import threading

from gradience_hub.adapter.basemodel import (
    TensorEntry,
    header_length,
    qualified,
    shards_of_index,
    weight_files,
)
from gradience_hub.errors import AdapterError, HubError
from gradience_hub.hub.client import api, hub_errors, passed_token, read_bytes

_Header = dict[str, tuple[str, tuple[int, ...], int, int]]  # tensor -> (dtype, shape, begin, end)


class HubBase:
    """A Hub repo's base weights (``adapter.basemodel.BaseWeights``)."""

    def __init__(self, repo_id: str, revision: str | None = None) -> None:
        self.repo_id = repo_id
        self._lock = threading.Lock()
        self.bytes_read = 0
        self.requests = 0
        self._entries: dict[str, TensorEntry] | None = None
        with hub_errors(repo_id, revision):
            info = api().model_info(repo_id, revision=revision, files_metadata=True)
        if not info.sha:
            raise HubError(f"the Hub did not report a commit for {repo_id}@{revision or 'main'}")
        self.sha = str(info.sha)
        self.identity = f"{repo_id}@{self.sha}"
        self._sizes: dict[str, int | None] = {s.rfilename: s.size for s in info.siblings or []}

    @property
    def entries(self) -> dict[str, TensorEntry]:
        """Every tensor of the base (its headers are read on first use)."""
        if self._entries is None:
            self._entries = self._load_entries()
        return self._entries

    def _load_entries(self) -> dict[str, TensorEntry]:
        found = weight_files(list(self._sizes))
        if not found:
            raise AdapterError(
                f"base model {self.repo_id}: no model.safetensors (or its index) in the repo",
                hint="UDR reads safetensors weights; pass --base-model a repo or directory "
                "that has them",
            )
        entries: dict[str, TensorEntry] = {}
        for comp, (first,) in found.items():
            for shard, tensors in self._headers(comp, first).items():
                start = self._data_start(shard, self._sizes.get(shard), tensors)
                for name, (dtype, shape, begin, end) in tensors.items():
                    entries[qualified(comp, name)] = TensorEntry(
                        shard, dtype, shape, start + begin, start + end
                    )
        return entries

    def _headers(self, comp: str, first: str) -> dict[str, _Header]:
        """Per shard file (repo path): tensor -> (dtype, shape, begin, end) as the header says."""
        client = api()
        with hub_errors(self.repo_id, self.sha):
            if not comp:
                meta = client.get_safetensors_metadata(self.repo_id, revision=self.sha)
                files = {f: m for f, m in meta.files_metadata.items()}
            else:
                shards = [first]
                if first.endswith(".index.json"):
                    raw = read_bytes(self.repo_id, first, self.sha) or b"{}"
                    try:
                        index = json.loads(raw)
                    except ValueError:
                        raise AdapterError(f"{self.repo_id}/{first} is not JSON") from None
                    shards = shards_of_index(index, f"{comp}/", f"{self.repo_id}/{first}")
                files = {
                    s: client.parse_safetensors_file_metadata(self.repo_id, s, revision=self.sha)
                    for s in shards
                }
        out: dict[str, _Header] = {}
        for shard, meta_file in files.items():
            out[shard] = {
                name: (
                    str(t.dtype),
                    tuple(int(x) for x in t.shape),
                    int(t.data_offsets[0]),
                    int(t.data_offsets[1]),
                )
                for name, t in meta_file.tensors.items()
            }
        return out

    def _data_start(
        self,
        shard: str,
        size: int | None,
        tensors: dict[str, tuple[str, tuple[int, ...], int, int]],
    ) -> int:
        """Where a shard's data begins: 8 + its header's length."""
        end = max((t[3] for t in tensors.values()), default=0)
        if size is not None and size - end >= 8:
            return size - end
        # no size in the listing: the first 8 bytes say it
        return 8 + header_length(self._get(shard, 0, 8), f"{self.repo_id}/{shard}")

    def _get(self, path: str, begin: int, end: int) -> bytes:
        """Bytes ``[begin, end)`` of a file at the resolved commit, by one Range request."""
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        url = hf_hub_url(self.repo_id, path, revision=self.sha)
        headers = build_hf_headers(token=passed_token())
        headers["Range"] = f"bytes={begin}-{end - 1}"
        with (
            hub_errors(self.repo_id, self.sha),
            get_session().stream("GET", url, headers=headers, follow_redirects=True) as response,
        ):
            hf_raise_for_status(response)
            if response.status_code != 206:
                # a server that ignores Range sends the whole shard: stop before reading it
                raise HubError(
                    f"{self.repo_id}/{path}: the Hub did not answer a Range request "
                    f"(status {response.status_code})",
                    hint="retry later; UDR never downloads whole shards",
                )
            data = bytes(response.read())
        if len(data) != end - begin:
            raise HubError(
                f"{self.repo_id}/{path}: {len(data)} bytes for a Range of {end - begin}",
                hint="retry later",
            )
        with self._lock:
            self.bytes_read += len(data)
            self.requests += 1
        return data

    def read(self, entry: TensorEntry) -> bytes:
        """Exactly the bytes of ``entry``."""
        return self._get(entry.file, entry.begin, entry.end)
