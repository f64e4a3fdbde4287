"""The service's config file (YAML) and its run-time options, as dataclasses that validate
themselves in ``__post_init__`` and name the bad key (exit 2 at start-up).

A complete config::

    watch:
      branch: main                 # pushes to refs/heads/main are audited (the default)
    repos:                         # first match wins; no config at all = every model repo, PR
      - match: "my-org/prod-*"     # fnmatch pattern on the repo id, case-insensitive
        direct: true               # commit to the branch instead of opening a Hub PR
      - match: "my-org/*"
        bench_json: eval/bench.json          # a bench record in the repo (or an https:// URL)
      - match: "other-org/*"
        bench_config: /etc/gradience/bench.yaml  # run this bench (needs the bench extra)

A repo that matches no rule is acknowledged and ignored.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradience_hub.errors import ConfigError
from gradience_hub.validate import config_fields

# A branch name as git allows it, minus the oddities nobody uses on the Hub.
_BRANCH = re.compile(r"^(?!/)(?!.*//)(?!.*\.\.)[A-Za-z0-9._/-]+(?<!/)$")


def _fail(key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(
        f"serve config: {key} must be {expected}, got {value!r}",
        hint=f"fix '{key}' in the config file",
        key=key,
    )


def _check_keys(cls: type, data: Any, where: str) -> dict[str, Any]:
    """``data`` as ``cls``'s keyword arguments (:func:`~gradience_hub.validate.config_fields`)."""
    return config_fields(cls, data, where, label="serve config")


@dataclass(frozen=True)
class WatchConfig:
    """Which branch's pushes are audited."""

    branch: str = field(default="main", metadata={"help": "the watched branch"})

    def __post_init__(self) -> None:
        branch = self.branch
        if isinstance(branch, str) and branch.startswith("refs/heads/"):
            branch = branch.removeprefix("refs/heads/")
            object.__setattr__(self, "branch", branch)
        if not isinstance(branch, str) or not _BRANCH.match(branch) or branch.startswith("refs/"):
            raise _fail("watch.branch", "a branch name such as main", self.branch)

    @property
    def ref(self) -> str:
        """The git ref the Hub names in ``updatedRefs`` (``refs/heads/main``)."""
        return f"refs/heads/{self.branch}"


@dataclass(frozen=True)
class RepoRule:
    """How the repos matching ``match`` are annotated."""

    match: str = field(metadata={"help": "fnmatch pattern on org/name, case-insensitive"})
    direct: bool = field(default=False, metadata={"help": "commit to the branch, not a Hub PR"})
    bench_json: str | None = field(
        default=None, metadata={"help": "a bench.json path in the repo, or an https:// URL"}
    )
    bench_config: str | None = field(
        default=None, metadata={"help": "a bench config file on this machine (runs the bench)"}
    )
    key: str = field(default="repos[0]", compare=False, repr=False)  # where it was read

    def __post_init__(self) -> None:
        k = self.key
        if not isinstance(self.match, str) or not self.match.strip():
            raise _fail(f"{k}.match", "a pattern such as my-org/*", self.match)
        if not isinstance(self.direct, bool):
            raise _fail(f"{k}.direct", "true or false", self.direct)
        for name in ("bench_json", "bench_config"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise _fail(f"{k}.{name}", "a path", value)
        if self.bench_json and self.bench_config:
            raise ConfigError(
                f"serve config: {k} names both bench_json and bench_config",
                hint="bench_json publishes an existing record; bench_config runs one: pick one",
                key=f"{k}.bench_json",
            )
        if self.bench_json and not self.bench_json.startswith(("https://", "http://")):
            parts = self.bench_json.split("/")
            if self.bench_json.startswith("/") or ".." in parts or "" in parts:
                raise _fail(f"{k}.bench_json", "a path in the repo or a URL", self.bench_json)
        if self.bench_config and not Path(self.bench_config).is_file():
            raise ConfigError(
                f"serve config: {k}.bench_config: file not found: {self.bench_config}",
                hint="bench_config is a bench config YAML on the machine that runs serve",
                key=f"{k}.bench_config",
            )

    def matches(self, repo: str) -> bool:
        """Whether ``repo`` (org/name) falls under this rule."""
        return fnmatch.fnmatchcase(repo.lower(), self.match.lower())


@dataclass(frozen=True)
class ServeConfig:
    """The whole config file: the watched branch and the repo rules (first match wins)."""

    watch: WatchConfig = field(default_factory=WatchConfig)
    repos: tuple[RepoRule, ...] = (RepoRule(match="*"),)

    def __post_init__(self) -> None:
        if not isinstance(self.watch, WatchConfig):
            raise _fail("watch", "a mapping such as {branch: main}", self.watch)
        if not isinstance(self.repos, tuple) or not self.repos:
            raise _fail("repos", "a non-empty list of rules", self.repos)

    def rule_for(self, repo: str) -> RepoRule | None:
        """The first rule that matches ``repo``, or None (the repo is not served)."""
        return next((rule for rule in self.repos if rule.matches(repo)), None)

    @classmethod
    def from_dict(cls, data: Any) -> ServeConfig:
        """Build from parsed YAML; every error names its key."""
        data = _check_keys(cls, {} if data is None else data, "")
        watch = WatchConfig(**_check_keys(WatchConfig, data.get("watch") or {}, "watch"))
        if "repos" not in data:
            return cls(watch=watch)
        items = data["repos"]
        if not isinstance(items, list) or not items:
            raise _fail("repos", "a non-empty list of rules", items)
        rules = []
        for i, item in enumerate(items):
            where = f"repos[{i}]"
            fields = _check_keys(RepoRule, item, where)
            fields.pop("key", None)
            if "match" not in fields:
                raise ConfigError(
                    f"serve config: missing required key {where}.match",
                    hint='e.g. match: "my-org/*"',
                    key=f"{where}.match",
                )
            rules.append(RepoRule(**fields, key=where))
        return cls(watch=watch, repos=tuple(rules))


def load_config(path: str | Path | None) -> ServeConfig:
    """Read and validate the YAML config (None: the defaults)."""
    if path is None:
        return ServeConfig()
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"serve config not found: {path}", hint="check --config", key=""
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read serve config {path}: {exc}", key="") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"serve config {path} is not valid YAML: {exc}".splitlines()[0], key=""
        ) from None
    return ServeConfig.from_dict(data)


# A job that audits needs seconds; one that runs a bench (bench_config) minutes to an hour.
DEFAULT_JOB_TIMEOUT = 3600.0
# STATUS_TOKEN guards the list of every repo the service audited: no short passwords.
MIN_STATUS_TOKEN = 16


@dataclass(frozen=True)
class ServeOptions:
    """How the service runs (command-line options and the secrets from the environment)."""

    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = field(default=1, metadata={"help": "0: queue only, run nothing"})
    max_queue: int = 1000
    secret: str | None = field(default=None, repr=False)  # WEBHOOK_SECRET; None = insecure
    max_attempts: int = field(
        default=5, metadata={"help": "tries per job: 429/5xx, or its process died"}
    )
    retry_base: float = field(default=2.0, metadata={"help": "first backoff delay (s)"})
    max_body: int = 1024 * 1024
    job_timeout: float = field(
        default=DEFAULT_JOB_TIMEOUT, metadata={"help": "wall-clock seconds per attempt"}
    )
    status_token: str | None = field(
        default=None, repr=False, metadata={"help": "STATUS_TOKEN; None: / and /runs are off"}
    )

    def __post_init__(self) -> None:
        checks = (
            ("--port", 0 <= self.port <= 65535, "a port number (0: any free port)", self.port),
            ("--workers", 0 <= self.workers <= 64, "between 0 and 64", self.workers),
            ("--max-queue", self.max_queue >= 1, "at least 1", self.max_queue),
            ("--max-attempts", self.max_attempts >= 1, "at least 1", self.max_attempts),
            ("--retry-base", self.retry_base >= 0, "a delay in seconds >= 0", self.retry_base),
            ("--job-timeout", self.job_timeout > 0, "a number of seconds > 0", self.job_timeout),
        )
        for key, ok, expected, value in checks:
            if not ok:
                raise ConfigError(f"{key} must be {expected}, got {value!r}", key=key)
        if self.secret is not None and not self.secret:
            raise ConfigError("WEBHOOK_SECRET is empty", hint="set it to the webhook's secret")
        if self.status_token is not None and len(self.status_token) < MIN_STATUS_TOKEN:
            raise ConfigError(
                f"STATUS_TOKEN is shorter than {MIN_STATUS_TOKEN} characters",
                hint="use a long random string, e.g. python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'",
                key="STATUS_TOKEN",
            )
