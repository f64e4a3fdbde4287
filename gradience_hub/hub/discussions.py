"""Hub discussions and pull requests: our open PRs (found by author and title), closing a
duplicate, and the sticky comment (edited only when we wrote it)."""

from __future__ import annotations

from dataclasses import dataclass

from gradience_hub.hub.client import api, hub_errors

PR_TITLE_PREFIX = "Gradience audit"


@dataclass(frozen=True)
class HubPR:
    """One of our open Hub pull requests."""

    num: int
    url: str
    ref: str  # refs/pr/N


def list_open_prs(repo_id: str, author: str) -> list[HubPR]:
    """Our open PRs (same author, title starting with PR_TITLE_PREFIX), oldest first."""
    found: list[HubPR] = []
    with hub_errors(repo_id):
        for disc in api().get_repo_discussions(
            repo_id, author=author, discussion_type="pull_request", discussion_status="open"
        ):
            # the author filter is the server's; check again so a Hub that ignores it cannot
            # make us commit into somebody else's PR
            if disc.author == author and disc.title.startswith(PR_TITLE_PREFIX):
                found.append(HubPR(num=disc.num, url=disc.url, ref=f"refs/pr/{disc.num}"))
    return sorted(found, key=lambda pr: pr.num)


def find_open_pr(repo_id: str, author: str) -> HubPR | None:
    """Our oldest open PR, or None. The oldest, so that runs racing to open one all end up
    committing to the same PR (see :func:`close_pr` for the duplicates)."""
    prs = list_open_prs(repo_id, author)
    return prs[0] if prs else None


def close_pr(repo_id: str, num: int, comment: str) -> None:
    """Close our Hub PR ``num`` with ``comment`` (a duplicate another run opened first)."""
    with hub_errors(repo_id):
        api().change_discussion_status(repo_id, num, "closed", comment=comment)


def upsert_comment(repo_id: str, num: int, body: str, marker: str, me: str) -> str:
    """Post ``body`` on Hub discussion/PR ``num``, or edit our earlier comment there.

    Ours = authored by ``me``, not hidden, containing ``marker``; other people's comments are
    never edited. Returns the discussion URL with the comment anchor.
    """
    from huggingface_hub.community import DiscussionComment

    hf = api()
    with hub_errors(repo_id):
        details = hf.get_discussion_details(repo_id, num)
        for event in details.events:
            if (
                isinstance(event, DiscussionComment)
                and event.author == me
                and not event.hidden
                and marker in event.content
            ):
                if event.content != body:
                    hf.edit_discussion_comment(repo_id, num, event.id, body)
                return f"{details.url}#{event.id}"
        comment = hf.comment_discussion(repo_id, num, body)
    return f"{details.url}#{comment.id}"
