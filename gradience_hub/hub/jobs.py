"""Hugging Face Jobs for ``--executor hf-jobs``, and the private scratch repo that carries a
bench's inputs and results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gradience_hub.hub.client import api, hub_errors


@dataclass(frozen=True)
class JobRef:
    """A Hugging Face Job as the bench sees it: id, web URL, stage (SCHEDULING, RUNNING,
    COMPLETED, ERROR, CANCELED, DELETED), the Hub's message, labels."""

    id: str
    namespace: str
    url: str
    stage: str
    message: str | None
    labels: dict[str, str]

    @property
    def finished(self) -> bool:
        """The job has reached a terminal stage and will not run further."""
        return self.stage in ("COMPLETED", "ERROR", "CANCELED", "DELETED")


def _job_ref(info: Any, namespace: str) -> JobRef:
    stage = getattr(info.status.stage, "value", info.status.stage)
    return JobRef(
        id=str(info.id),
        namespace=namespace,
        url=str(info.url),
        stage=str(stage),
        message=info.status.message,
        labels=dict(info.labels or {}),
    )


def run_job(
    image: str,
    command: list[str],
    *,
    namespace: str,
    flavor: str,
    env: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None,
    timeout: int | None = None,
    labels: dict[str, str] | None = None,
) -> JobRef:
    """Start a Job (``HfApi.run_job``). ``secrets`` reach the container as environment
    variables and are never shown back; put tokens there, never in ``env`` or ``command``."""
    with hub_errors(f"jobs/{namespace}"):
        info = api().run_job(
            image=image,
            command=command,
            env=env,
            secrets=secrets,
            flavor=flavor,
            timeout=timeout,
            labels=labels,
            namespace=namespace,
        )
    return _job_ref(info, namespace)


def inspect_job(job_id: str, namespace: str) -> JobRef:
    """The job's current stage (``HfApi.inspect_job``)."""
    with hub_errors(f"jobs/{namespace}/{job_id}"):
        return _job_ref(api().inspect_job(job_id=job_id, namespace=namespace), namespace)


def list_jobs(namespace: str, labels: dict[str, str] | None = None) -> list[JobRef]:
    """The namespace's jobs carrying every label in ``labels`` (``HfApi.list_jobs``)."""
    with hub_errors(f"jobs/{namespace}"):
        return [
            _job_ref(info, namespace)
            for info in api().list_jobs(labels=labels, namespace=namespace)
        ]


def job_logs(job_id: str, namespace: str) -> list[str]:
    """The job's log lines so far (``HfApi.fetch_job_logs`` without following)."""
    with hub_errors(f"jobs/{namespace}/{job_id}"):
        return list(api().fetch_job_logs(job_id=job_id, namespace=namespace, follow=False))


def cancel_job(job_id: str, namespace: str) -> None:
    """Cancel a job (``HfApi.cancel_job``); a job that has already ended stays as it is."""
    with hub_errors(f"jobs/{namespace}/{job_id}"):
        api().cancel_job(job_id=job_id, namespace=namespace)


def create_scratch_repo(repo_id: str) -> None:
    """Create the private model repo ``repo_id`` (kept when it exists) for a bench's inputs
    and results."""
    with hub_errors(repo_id):
        api().create_repo(repo_id, private=True, exist_ok=True)


def upload_files(repo_id: str, files: dict[str, bytes], message: str) -> str:
    """Commit ``files`` to the main branch of ``repo_id`` in one commit; returns its sha."""
    from huggingface_hub import CommitOperationAdd

    operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=b) for p, b in files.items()]
    with hub_errors(repo_id):
        info = api().create_commit(repo_id, operations, commit_message=message)
    return str(info.oid)
