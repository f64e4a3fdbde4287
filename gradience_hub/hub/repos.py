"""Model repos we own: created when missing, filled in one commit (``annotate --push-variant``)."""

from __future__ import annotations

import time

from gradience_hub.hub.client import api, hub_errors
from gradience_hub.hub.commit import (
    CommitOutcome,
    ParentMoved,
    Retries,
    RetryPolicy,
    Transient,
    commit_files,
)


def ensure_model_repo(repo_id: str, *, private: bool = False) -> str:
    """Create the model repo ``repo_id`` when it does not exist (an existing one is kept as it
    is, visibility included); returns the head sha of its main branch."""
    with hub_errors(repo_id):
        api().create_repo(repo_id, private=private, exist_ok=True)
        info = api().model_info(repo_id)
    return str(info.sha)


def commit_to_main(
    repo_id: str,
    files: dict[str, bytes],
    message: str,
    description: str,
    *,
    private: bool = False,
    policy: RetryPolicy | None = None,
) -> CommitOutcome:
    """``files`` on ``main`` of ``repo_id`` (created when missing) in ONE commit, none when
    every file is already there; a moved head or a transient failure is retried under the
    commit's :class:`RetryPolicy` (then HubError, exit 3). Every file is written whole, so a
    retry on a new head needs nothing recomputed."""
    retries = Retries(repo_id, policy or RetryPolicy())
    while True:
        head = ensure_model_repo(repo_id, private=private)
        try:
            return commit_files(
                repo_id,
                files,
                parent_sha=head,
                message=message,
                description=description,
                create_pr=False,
                branch="main",
            )
        except ParentMoved as exc:
            retries.after_parent_moved(exc)
        except Transient as exc:
            time.sleep(retries.after_transient(exc))
