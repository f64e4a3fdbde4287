"""One exception hierarchy for gradience-hub.

Every error a user can cause (or the outside world can cause) is a :class:`GradienceError`
subclass that carries its process exit code and, optionally, a hint that names the fix.
The CLI turns them into one or two lines in one place (``cli.main``); library callers can
catch them by class.

Exit codes (docs/architecture.md): 0 success or PASS, 1 policy FAIL, 2 bad input,
3 Hub/GitHub/network, 70 an internal error (a bug in gradience-hub; ``EX_SOFTWARE`` of sysexits.h).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_BAD_INPUT = 2
EXIT_REMOTE = 3
EXIT_INTERNAL = 70  # EX_SOFTWARE: 2 would wrongly tell the user their input was bad
ISSUES_URL = "https://github.com/gradience/gradience-hub/issues"


class GradienceError(Exception):
    """Base class: a message for the user, an optional hint, and an exit code."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def user_lines(self) -> list[str]:
        """The one or two lines the CLI prints for this error."""
        lines = [f"Error: {self.message}"]
        if self.hint:
            lines.append(f"Hint: {self.hint}")
        return lines


class UsageError(GradienceError):
    """Bad command-line usage or option values (exit 2)."""


class AdapterError(GradienceError):
    """The adapter cannot be read or is not a valid LoRA adapter (exit 2)."""


class ConfigError(GradienceError):
    """A bench config (or other user config) is invalid; names the bad key (exit 2)."""

    def __init__(self, message: str, hint: str | None = None, key: str | None = None) -> None:
        super().__init__(message, hint)
        self.key = key


class TemplateError(GradienceError):
    """A template is missing or fails to render (exit 2)."""


class CardError(GradienceError):
    """A model card cannot be spliced safely, e.g. broken gradience markers (exit 2)."""


class RecordError(GradienceError):
    """A bench.json or audit.json cannot be read (exit 2)."""


class RecordMismatch(RecordError):
    """A bench.json measured another adapter than the one it would be published for (exit 2).

    ``record_adapter`` and ``adapter`` name both, each with its content hash."""

    def __init__(self, record_adapter: str, adapter: str) -> None:
        super().__init__(
            f"the bench record measured another adapter: {record_adapter}, not {adapter}",
            hint="publish the record made for this adapter (gradience-hub bench SOURCE), "
            "or annotate the adapter the record names",
        )
        self.record_adapter = record_adapter
        self.adapter = adapter


class MissingExtraError(GradienceError):
    """A command needs an optional dependency group that is not installed (exit 2)."""

    def __init__(self, package: str, extra: str = "bench") -> None:
        super().__init__(
            f"this command needs '{package}', which is not installed",
            hint=f"install the '{extra}' extra: pip install 'gradience-hub[{extra}]'",
        )
        self.package = package
        self.extra = extra


class RemoteError(GradienceError):
    """The Hub, GitHub or the network failed or refused (exit 3)."""

    exit_code = EXIT_REMOTE

    def __init__(self, message: str, hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message, hint)
        self.status = status


class HubError(RemoteError):
    """A Hugging Face Hub request failed (exit 3)."""


class GitHubError(RemoteError):
    """A GitHub API request failed (exit 3)."""


class PolicyFailed(GradienceError):
    """The bench policy verdict is FAIL and the caller asked to fail on it (exit 1)."""

    exit_code = EXIT_FAIL


class CellError(GradienceError):
    """Bench cells failed on an executor (a Ray task raised, a Job ended in ERROR): names each
    cell and its cause. Exit 2, or 3 when the cells failed on the Hub's side (Jobs)."""

    def __init__(
        self, failures: dict[str, str], exit_code: int = EXIT_BAD_INPUT, hint: str | None = None
    ) -> None:
        shown = "; ".join(f"cell {key}: {why}" for key, why in failures.items())
        count = "a cell" if len(failures) == 1 else f"{len(failures)} cells"
        super().__init__(
            f"{count} failed ({shown})",
            hint=hint or "the finished cells are saved: fix the cause and rerun with --resume",
        )
        self.failures = dict(failures)
        self.exit_code = exit_code
