"""Hub webhooks for ``gradience-hub webhook create|list|delete`` (``serve`` receives them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gradience_hub.hub.client import api, hub_errors


@dataclass(frozen=True)
class Webhook:
    """A Hub webhook as ``webhook list`` shows it (never its secret)."""

    id: str
    url: str | None
    watched: tuple[tuple[str, str], ...]  # (type, name): ("org", "my-org"), ("model", "o/n")
    domains: tuple[str, ...]
    disabled: bool
    has_secret: bool


def _webhook(info: Any) -> Webhook:
    return Webhook(
        id=str(info.id),
        url=info.url,
        watched=tuple((w.type, w.name) for w in info.watched),
        domains=tuple(info.domains or ()),
        disabled=bool(info.disabled),
        has_secret=bool(info.secret),
    )


def create_webhook(
    url: str,
    watched: list[tuple[str, str]],
    secret: str | None,
    domains: tuple[str, ...] = ("repo",),
) -> Webhook:
    """Register a webhook (``HfApi.create_webhook``) that POSTs the Hub's events to ``url``."""
    from huggingface_hub import WebhookWatchedItem

    items = [WebhookWatchedItem(type=t, name=n) for t, n in watched]  # type: ignore[arg-type]
    with hub_errors("webhooks"):
        info = api().create_webhook(url=url, watched=items, domains=list(domains), secret=secret)
    return _webhook(info)


def list_webhooks() -> list[Webhook]:
    """The token owner's webhooks."""
    with hub_errors("webhooks"):
        return [_webhook(info) for info in api().list_webhooks()]


def delete_webhook(webhook_id: str) -> None:
    """Delete one of the token owner's webhooks."""
    with hub_errors(f"webhook {webhook_id}"):
        api().delete_webhook(webhook_id)
