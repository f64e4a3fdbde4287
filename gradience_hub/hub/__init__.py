"""The Hugging Face Hub: the only package that imports huggingface_hub, one module per concern.

:mod:`.client` (token, ``HfApi``, the one table of Hub errors -> :class:`~gradience_hub.errors.
HubError`, repo reads), :mod:`.download` (adapter files, LoRA-file choice), :mod:`.source`
(SOURCE -> opened adapter), :mod:`.commit` (one commit, its failures classified, the retry
policy), :mod:`.discussions` (our PRs, sticky comments), :mod:`.webhooks`, :mod:`.jobs` (Jobs and
the scratch repo), :mod:`.listing` (the scan's listings, lean downloads and dataset push).
Callers use the names exported here (``hub.commit_files(...)``).
"""

from gradience_hub.hub.client import (
    api,
    hub_errors,
    passed_token,
    quiet_client,
    read_bytes,
    read_text,
    reason,
    repo_files,
    repo_url,
    resolve_sha,
    token,
    using_token,
    whoami,
)
from gradience_hub.hub.commit import (
    CommitOutcome,
    ParentMoved,
    Retries,
    RetryPolicy,
    Transient,
    classify,
    commit_files,
    parse_retry_after,
    retry_after,
)
from gradience_hub.hub.discussions import (
    PR_TITLE_PREFIX,
    HubPR,
    close_pr,
    find_open_pr,
    list_open_prs,
    upsert_comment,
)
from gradience_hub.hub.download import (
    ADAPTER_FILES,
    MAX_HEADER_PROBES,
    MAX_LORA_FILE_BYTES,
    MIN_LORA_FILE_BYTES,
    PREFERRED_LORA_FILE,
    Download,
    download_adapter,
    download_files,
    lora_file_candidates,
)
from gradience_hub.hub.jobs import (
    JobRef,
    cancel_job,
    create_scratch_repo,
    inspect_job,
    job_logs,
    list_jobs,
    run_job,
    upload_files,
)
from gradience_hub.hub.source import load_adapter
from gradience_hub.hub.webhooks import Webhook, create_webhook, delete_webhook, list_webhooks

__all__ = [
    "ADAPTER_FILES",
    "MAX_HEADER_PROBES",
    "MAX_LORA_FILE_BYTES",
    "MIN_LORA_FILE_BYTES",
    "PREFERRED_LORA_FILE",
    "PR_TITLE_PREFIX",
    "CommitOutcome",
    "Download",
    "HubPR",
    "JobRef",
    "ParentMoved",
    "Retries",
    "RetryPolicy",
    "Transient",
    "Webhook",
    "api",
    "cancel_job",
    "classify",
    "close_pr",
    "commit_files",
    "create_scratch_repo",
    "create_webhook",
    "delete_webhook",
    "download_adapter",
    "download_files",
    "find_open_pr",
    "hub_errors",
    "inspect_job",
    "job_logs",
    "list_jobs",
    "list_open_prs",
    "list_webhooks",
    "load_adapter",
    "lora_file_candidates",
    "parse_retry_after",
    "passed_token",
    "quiet_client",
    "read_bytes",
    "read_text",
    "reason",
    "repo_files",
    "repo_url",
    "resolve_sha",
    "retry_after",
    "run_job",
    "token",
    "upload_files",
    "upsert_comment",
    "using_token",
    "whoami",
]
