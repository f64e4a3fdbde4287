"""The GitHub Actions runtime: ``INPUT_*`` settings, masked secrets and workflow commands
(:mod:`.io`), and the run itself (:mod:`.run`: audit/bench/annotate per repo, outputs, step
summary, one sticky PR comment, exit code)."""

from gradience_hub.action.io import (
    FAIL_ON,
    INPUTS,
    MODES,
    OUTPUTS,
    Channel,
    InputError,
    Secrets,
    Settings,
    escape_data,
    escape_property,
    parse_settings,
    read_input,
    workflow_command,
)
from gradience_hub.action.run import (
    FORK_SAFE_DOC,
    REPORT_DIR,
    RepoResult,
    main,
    run,
    run_repo,
)

__all__ = [
    "FAIL_ON",
    "FORK_SAFE_DOC",
    "INPUTS",
    "MODES",
    "OUTPUTS",
    "REPORT_DIR",
    "Channel",
    "InputError",
    "RepoResult",
    "Secrets",
    "Settings",
    "escape_data",
    "escape_property",
    "main",
    "parse_settings",
    "read_input",
    "run",
    "run_repo",
    "workflow_command",
]
