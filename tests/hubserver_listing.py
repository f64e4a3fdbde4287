"""The Hub stand-in's model listing and dataset repos (hooked into ``hubserver._route``).

``GET /api/models?author=&search=&filter=&limit=`` answers like the Hub as huggingface_hub
2.4's ``list_models`` reads it (``hf_api.py`` and ``utils/_pagination.py``): a JSON list of
``{_id, id, author, private, gated, tags, sha, lastModified, createdAt, downloads, likes,
library_name}``, paged with a ``Link: <...>; rel="next"`` header that carries every query
parameter plus a cursor (the client follows it verbatim). ``author`` matches the namespace,
``search`` a case-insensitive substring of the id, each ``filter`` a tag (all must match).
Private repos are listed only to accounts that can read them; gated repos are listed to all.

Tags are what the Hub derives: the card's ``tags`` and ``library_name``, ``peft`` for a repo
with a top-level adapter_config.json, and ``base_model:<id>`` and ``base_model:adapter:<id>``
for the base named by the card or, for a PEFT adapter, by ``base_model_name_or_path``.

The page size is ``hub.listing_page_size`` (default 1000, a test sets it small), capped by
``limit`` as on the Hub.

Dataset repos (``--push-to-hub``) reuse the model machinery: dataset ``ns/name`` is stored as the
repo ``datasets/ns/name``, so preupload, commit and info behave exactly as for models;
``hub.files("datasets/ns/name")`` reads one back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import numpy as np

from tests import hubserver as hs

DEFAULT_PAGE_SIZE = 1000


def dataset_key(repo_id: str) -> str:
    """The stand-in's internal name of dataset ``repo_id``."""
    return f"datasets/{repo_id}"


def listing_route(hub: hs.HubServer, method: str, rest: list[str], ctx: hs._Ctx) -> Any:
    """Answer the listing and dataset-repo routes; None for every other route."""
    if rest == ["models"] and method == "GET":
        return _list_models(hub, ctx)
    if rest == ["repos", "create"] and method == "POST":
        payload = ctx.json()
        if isinstance(payload, dict) and payload.get("type") == "dataset":
            return _create_dataset(hub, ctx, payload)
        return None
    if rest[:1] == ["datasets"] and len(rest) >= 3:
        key = dataset_key(f"{rest[1]}/{rest[2]}")
        return hs._model_api(
            hub, method, [quote(key.rsplit("/", 1)[0], safe=""), rest[2], *rest[3:]], ctx
        )
    return None


def _tags(hub: hs.HubServer, repo: Any) -> list[str]:
    files = repo.commits[repo.branches["main"]].files
    card = hs.parse_card_data(files.get("README.md")) or {}
    tags: list[str] = []
    raw = card.get("tags") or []
    for tag in [*(raw if isinstance(raw, list) else [raw]), card.get("library_name")]:
        if isinstance(tag, str) and tag not in tags:
            tags.append(tag)
    base = card.get("base_model")
    if "adapter_config.json" in files:
        if "peft" not in tags:
            tags.append("peft")
        try:
            config = json.loads(files["adapter_config.json"])
        except ValueError:
            config = {}
        if not base and isinstance(config, dict):
            base = config.get("base_model_name_or_path")
    if isinstance(base, str) and base:
        tags += [f"base_model:{base}", f"base_model:adapter:{base}"]
    return tags


def _list_models(hub: hs.HubServer, ctx: hs._Ctx) -> Any:
    author = ctx.q("author")
    search = (ctx.q("search") or "").lower()
    filters = ctx.query.get("filter", [])
    items = []
    for repo_id, repo in hub._repos.items():
        if repo_id.startswith("datasets/") or not hub._can_read(repo, ctx.user):
            continue
        if author and repo_id.split("/")[0] != author:
            continue
        if search and search not in repo_id.lower():
            continue
        tags = _tags(hub, repo)
        if any(f not in tags for f in filters):
            continue
        sha = repo.branches["main"]
        items.append(
            {
                "_id": hs.hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "author": repo_id.split("/")[0],
                "private": repo.private,
                "gated": repo.gated,
                "tags": tags,
                "sha": sha,
                "lastModified": hs._iso(repo.commits[sha].date),
                "createdAt": hs._iso(repo.created_at),
                "downloads": 0,
                "likes": 0,
                **({"library_name": "peft"} if "peft" in tags else {}),
            }
        )
    page_size = getattr(hub, "listing_page_size", DEFAULT_PAGE_SIZE)
    limit = ctx.q("limit")
    if limit and limit.isdigit() and int(limit) > 0:
        page_size = min(page_size, int(limit))
    return hs._paged(hub, ctx, items, page_size)


def _create_dataset(hub: hs.HubServer, ctx: hs._Ctx, payload: dict[str, Any]) -> Any:
    user = hub._require_write_token(ctx.user, "create a repo")
    namespace = payload.get("organization") or user.name
    if namespace != user.name:
        raise hs.HubError(403, f"You don't have the rights to create a repo under {namespace}")
    repo_id = f"{namespace}/{payload['name']}"
    url = f"{hub.url}/datasets/{repo_id}"
    if dataset_key(repo_id) in hub._repos:
        raise hs.HubError(409, "You already created this dataset repo", extra={"url": url})
    hub.create_repo(
        dataset_key(repo_id),
        {".gitattributes": hs.DEFAULT_GITATTRIBUTES},
        private=bool(payload.get("private")),
        owner=user.name,
    )
    ctx.mutated = True
    return hs._json_response({"url": url, "name": repo_id, "id": repo_id})


# --------------------------------------------------------------------------------------------
# A planted fleet: many adapter repos of known spectra, for the scan's tests and benchmark
# --------------------------------------------------------------------------------------------

JUNK_KINDS = ("not-an-adapter", "broken", "gated")
FORMATS = ("peft", "peft", "peft", "peft-multi", "kohya", "diffusers", "peft", "peft", "peft")


@dataclass
class PlantedAdapter:
    """One planted adapter: every module has exactly ``spectrum`` as the singular values of
    its update (times the LoRA scale), so its figures are known without an audit."""

    name: str
    format: str
    r: int
    spectrum: list[float]
    n_modules: int
    base_model: str | None


@dataclass
class PlantedRepo:
    """One planted repo: its adapters, or the kind of junk it is."""

    repo_id: str
    adapters: list[PlantedAdapter] = field(default_factory=list)
    junk: str | None = None


def _spectrum(r: int, decay: float) -> list[float]:
    """A geometric spectrum whose cumulative energy is never within 1e-3 of 0.9 (so float32
    storage cannot move the energy rank across the threshold)."""
    while True:
        s = np.exp(-decay * np.arange(r))
        cum = np.cumsum(s**2) / np.sum(s**2)
        if np.min(np.abs(cum - 0.9)) > 1e-3:
            return [float(x) for x in s]
        decay *= 1.07


def _factors(d_out: int, d_in: int, spectrum: list[float], seed: int) -> tuple[Any, Any]:
    from tests.factories import planted_factors

    return planted_factors(d_out, d_in, len(spectrum), np.array(spectrum), seed=seed)


def _peft_files(
    spectrum: list[float], r: int, d: int, layers: int, seed: int, base: str, prefix: str = ""
) -> dict[str, bytes]:
    from safetensors.numpy import save

    from tests.factories import PREFIX, lora_config

    tensors = {}
    for i in range(layers):
        for j, proj in enumerate(("q_proj", "v_proj")):
            B, A = _factors(d, d, spectrum, seed + 2 * i + j)
            name = f"{PREFIX}model.layers.{i}.self_attn.{proj}"
            tensors[f"{name}.lora_A.weight"] = np.ascontiguousarray(A, np.float32)
            tensors[f"{name}.lora_B.weight"] = np.ascontiguousarray(B, np.float32)
    config = lora_config(r=r, lora_alpha=2 * r, base_model_name_or_path=base)
    return {
        f"{prefix}adapter_config.json": json.dumps(config).encode(),
        f"{prefix}adapter_model.safetensors": save(tensors),
    }


def _kohya_file(spectrum: list[float], d: int, layers: int, seed: int) -> bytes:
    from safetensors.numpy import save

    r = len(spectrum)
    tensors = {}
    for i in range(layers):
        B, A = _factors(d, d, spectrum, seed + i)
        name = f"lora_unet_down_blocks_{i}_attentions_0_proj_in"
        tensors[f"{name}.lora_down.weight"] = np.ascontiguousarray(A, np.float32)
        tensors[f"{name}.lora_up.weight"] = np.ascontiguousarray(B, np.float32)
        tensors[f"{name}.alpha"] = np.array(float(r), dtype=np.float32)
    return save(tensors)


def _diffusers_file(spectrum: list[float], d: int, layers: int, seed: int) -> bytes:
    from safetensors.numpy import save

    tensors = {}
    for i in range(layers):
        B, A = _factors(d, d, spectrum, seed + i)
        key = f"unet.down_blocks.{i}.attentions.0.transformer_blocks.0.attn1.to_q"
        tensors[f"{key}.lora_A.weight"] = np.ascontiguousarray(A, np.float32)
        tensors[f"{key}.lora_B.weight"] = np.ascontiguousarray(B, np.float32)
    return save(tensors)


def plant_fleet(
    hub: hs.HubServer,
    n: int,
    *,
    org: str = "fleet",
    d: int = 32,
    layers: int = 2,
    junk_every: int = 10,
) -> list[PlantedRepo]:
    """Create ``n`` repos under ``org``: every ``junk_every``-th is junk (cycling through
    :data:`JUNK_KINDS`), the rest adapters cycling through :data:`FORMATS` with ranks 4, 8, 16
    and geometric spectra of known decay. Deterministic."""
    planted: list[PlantedRepo] = []
    for k in range(n):
        repo_id = f"{org}/adapter-{k:04d}"
        r = (4, 8, 16)[k % 3]
        spectrum = _spectrum(r, 0.15 + 0.05 * (k % 11))
        base = f"base/model-{k % 4}"
        seed = 1000 * k
        repo = PlantedRepo(repo_id)
        if junk_every and k % junk_every == junk_every - 1:
            kind = JUNK_KINDS[(k // junk_every) % len(JUNK_KINDS)]
            repo.junk = kind
            if kind == "not-an-adapter":
                files = {"README.md": b"# a model\n", "model.safetensors": b"\0" * 128}
                hub.create_repo(repo_id, files)
            elif kind == "broken":
                files = _peft_files(spectrum, r, d, layers, seed, base)
                files["adapter_model.safetensors"] = b"\x10\0\0\0\0\0\0\0{not json at all"
                hub.create_repo(repo_id, files)
            else:
                hub.create_repo(
                    repo_id, _peft_files(spectrum, r, d, layers, seed, base), gated=True
                )
            planted.append(repo)
            continue
        fmt = FORMATS[k % len(FORMATS)]
        if fmt == "peft":
            files = _peft_files(spectrum, r, d, layers, seed, base)
            repo.adapters.append(PlantedAdapter("default", "peft", r, spectrum, 2 * layers, base))
        elif fmt == "peft-multi":
            files = {}
            for name, shift in (("task-a", 0), ("task-b", 1)):
                spec = _spectrum(r, 0.15 + 0.05 * ((k + shift * 5) % 11))
                files.update(_peft_files(spec, r, d, layers, seed + 100 * shift, base, f"{name}/"))
                repo.adapters.append(PlantedAdapter(name, "peft", r, spec, 2 * layers, base))
        elif fmt == "kohya":
            card = f"---\nbase_model: {base}\ntags:\n- lora\n---\n# style\n".encode()
            files = {"README.md": card, "style.safetensors": _kohya_file(spectrum, d, layers, seed)}
            repo.adapters.append(
                PlantedAdapter("style.safetensors", "kohya", r, spectrum, layers, base)
            )
        else:
            name = "pytorch_lora_weights.safetensors"
            files = {name: _diffusers_file(spectrum, d, layers, seed)}
            repo.adapters.append(PlantedAdapter(name, "diffusers", r, spectrum, layers, None))
        hub.create_repo(repo_id, files)
        planted.append(repo)
    return planted


def expected_figures(spectrum: list[float], r: int, tau: float = 0.9) -> dict[str, float]:
    """Stable rank, utilization and energy rank of a planted spectrum, computed here from the
    singular values themselves (float64), independently of gradience_hub."""
    s = np.asarray(spectrum, dtype=np.float64)
    energy = s**2
    stable = float(energy.sum() / energy.max())
    cum = np.cumsum(energy) / energy.sum()
    k = int(np.argmax(cum >= tau) + 1)
    return {"stable_rank": stable, "utilization": stable / r, "energy_rank": float(k)}
