"""What leaves the process on stdout and stderr: one guard for the CLI and the Action.

Everything gradience-hub prints can carry text it did not write: module names and repo ids
from an adapter, Hub and GitHub error bodies (a proxy may echo the ``Authorization`` header),
exception texts. :class:`GuardedStream` wraps ``sys.stdout``/``sys.stderr`` once, at the entry
points (``cli.main``, ``gradience-hub action``), so no single message format has to remember:

- secrets are blanked (:class:`Secrets`: the HF and GitHub tokens, whichever way they came);
- control characters are dropped: ANSI/OSC escape sequences (colours, hyperlinks, window
  titles), other C0/C1 controls and bidi overrides; tab, CR and LF stay;
- no line can become a GitHub Actions workflow command: the runner treats a line that starts
  with ``::`` (after leading whitespace) as one, so such a line gets a zero-width space between
  the colons. The Action's own commands go out through :meth:`GuardedStream.command`.

Only the standard library is imported here.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

# ESC [ ... final byte (CSI), ESC ] ... BEL or ESC \ (OSC), other two-byte ESC sequences, then
# single control characters: C0 except TAB/LF/CR, DEL, C1, and the bidi controls that make
# displayed text lie (the same set gradience_hub.markdown.md replaces in Markdown).
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[@-Z\\-_]?"
    r"|\x9b[0-?]*[ -/]*[@-~]"
    r"|\x9d[^\x07\x1b\x9c]*(?:\x07|\x9c)?"
    r"|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
# What the runner reads as a workflow command: "::" at the start of a line, after any spaces.
_COMMAND_START = re.compile(r"(^|[\n])([ \t\r\f\v]*):(?=:)")
_ZWSP = "\u200b"


def strip_controls(text: str) -> str:
    """``text`` without escape sequences and control characters (TAB, CR and LF kept)."""
    return _ESCAPES.sub("", text)


def defuse_commands(text: str, at_line_start: bool = True) -> str:
    """``text`` with every line that would start a workflow command (``::name::``) broken by a
    zero-width space between the two colons; it still reads the same."""

    def breaker(match: re.Match[str]) -> str:
        if match.start() == 0 and not match.group(1) and not at_line_start:
            return match.group(0)
        return f"{match.group(1)}{match.group(2)}:{_ZWSP}"

    return _COMMAND_START.sub(breaker, text)


def clean(text: str) -> str:
    """Untrusted text made safe to print on its own: no controls, no workflow command."""
    return defuse_commands(strip_controls(str(text)))


class Secrets:
    """Values that must never leave the process in clear text; :meth:`scrub` blanks them.

    Values may also come from providers, asked once when first needed (the token of a saved
    Hugging Face login is only known once huggingface_hub is loaded).
    """

    def __init__(self) -> None:
        self._values: list[str] = []
        self._providers: list[Callable[[], str | None]] = []

    def add(self, value: str | None) -> None:
        for part in (value or "").splitlines():
            part = part.strip()
            if part and part not in self._values:
                self._values.append(part)
        self._values.sort(key=len, reverse=True)  # longest first: no partial leftovers

    def add_provider(self, provider: Callable[[], str | None]) -> None:
        """Ask ``provider`` for a secret at each scrub until it answers one."""
        self._providers.append(provider)

    def _resolve(self) -> None:
        pending = []
        for provider in self._providers:
            try:
                value = provider()
            except Exception:  # a provider must never break printing
                value = None
            if value:
                self.add(value)
            else:
                pending.append(provider)
        self._providers = pending

    def __iter__(self) -> Iterator[str]:
        self._resolve()
        return iter(list(self._values))

    def scrub(self, text: str) -> str:
        self._resolve()
        for value in self._values:
            text = text.replace(value, "***")
        return text


class GuardedStream(io.TextIOBase):
    """A text stream that scrubs secrets, drops control characters and defuses workflow
    commands in everything written through it (see the module docstring)."""

    def __init__(self, stream: TextIO, secrets: Secrets) -> None:
        self._stream = stream
        self.secrets = [secrets]  # a nested guard (the Action inside the CLI) adds its own
        self._at_line_start = True

    def scrub(self, text: str) -> str:
        for secrets in self.secrets:
            text = secrets.scrub(text)
        return text

    def _guard(self, s: str) -> str:
        text = defuse_commands(strip_controls(self.scrub(s)), self._at_line_start)
        if text:
            self._at_line_start = text.endswith("\n")
        return text

    def write(self, s: str) -> int:
        if not isinstance(s, str):  # behave like a text stream: click probes with b""
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        self._stream.write(self._guard(s))
        return len(s)

    def command(self, line: str) -> None:
        """Write one workflow command of ours (scrubbed of secrets, not defused)."""
        text = self.scrub(line.rstrip("\n"))
        if not self._at_line_start:
            text = "\n" + text
        self._stream.write(text + "\n")
        self._stream.flush()
        self._at_line_start = True

    def mask(self, line: str) -> None:
        """Write the runner's ``::add-mask::SECRET`` line: the one line that must carry a
        secret in clear (the runner's masker reads it and hides the value from the log)."""
        prefix = "" if self._at_line_start else "\n"
        self._stream.write(f"{prefix}{line.rstrip(chr(10))}\n")
        self._stream.flush()
        self._at_line_start = True

    def flush(self) -> None:
        self._stream.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", None) or "utf-8"


def emit_command(line: str) -> None:
    """Print a workflow command of ours on stdout, past the guard's command defusing."""
    stream = sys.stdout
    if isinstance(stream, GuardedStream):
        stream.command(line)
    else:
        print(line, flush=True)


def emit_mask(line: str) -> None:
    """Print an ``::add-mask::`` line of ours on stdout, unscrubbed (see GuardedStream.mask)."""
    stream = sys.stdout
    if isinstance(stream, GuardedStream):
        stream.mask(line)
    else:
        print(line, flush=True)


class guarded:
    """Context manager: ``sys.stdout`` and ``sys.stderr`` wrapped in GuardedStream, restored
    (and flushed) on exit. Inside another guard it adds its secrets to the outer streams."""

    def __init__(self, secrets: Secrets) -> None:
        self.secrets = secrets
        self._saved: tuple[TextIO, TextIO] | None = None
        self._joined: list[GuardedStream] = []

    def __enter__(self) -> Secrets:
        out, err = sys.stdout, sys.stderr
        self._saved = (out, err)
        wrapped = []
        for stream in (out, err):
            if isinstance(stream, GuardedStream):
                stream.secrets.append(self.secrets)
                self._joined.append(stream)
                wrapped.append(stream)
            else:
                wrapped.append(GuardedStream(stream, self.secrets))
        sys.stdout, sys.stderr = wrapped[0], wrapped[1]
        return self.secrets

    def __exit__(self, *exc: object) -> None:
        assert self._saved is not None
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        for stream in self._joined:
            if self.secrets in stream.secrets:
                stream.secrets.remove(self.secrets)
        sys.stdout, sys.stderr = self._saved
