"""The one atomic writer: files and directories appear whole or not at all.

Every file gradience-hub writes for a user (``audit --output``, the README and ``gradience/*`` of
a local clone, the heatmap, reports) goes through :func:`write_file`; every directory it
replaces (``compress --output``) goes through :func:`replace_directory`. The rules, one place:

- A file is written to a temporary sibling and renamed over the target, so a reader (or a
  crash) never sees half of it.
- A symlink is written *through*: its target is replaced and the link stays a link.
- Only regular files are replaced. A directory, FIFO, socket or device (``-o /dev/full`` as
  root in the Docker action) is refused, never swapped for a regular file.
- A missing parent directory is bad input (exit 2), not a traceback; ``parents=True`` creates it.
- An existing file keeps its permission bits; a new one gets the usual ``0666 & ~umask``.
- ``within=ROOT`` refuses a target that resolves outside ROOT (a symlinked ``gradience/`` or
  ``README.md`` in a clone must not make us write, or publish, somebody else's file).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from gradience_hub.errors import RecordError, UsageError

_NEW_FILE_MODE = 0o666  # before the umask, as open() does


def resolve_within(root: str | os.PathLike[str], relative: str) -> Path:
    """``root / relative`` with symlinks resolved; UsageError when that leaves ``root``."""
    base = Path(root).resolve()
    target = (base / relative).resolve()
    if target != base and base not in target.parents:
        raise UsageError(
            f"{relative} in {root} resolves to {target}, outside that directory",
            hint="replace the symlink with a regular file or directory inside it",
        )
    return target


def _target(path: Path) -> Path:
    """The file a write to ``path`` must replace: a symlink's final target, else ``path``."""
    if path.is_symlink():
        return Path(os.path.realpath(path))
    return path


def write_file(
    path: str | os.PathLike[str],
    data: bytes | str,
    *,
    parents: bool = False,
    within: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``data`` (str is UTF-8) to ``path`` atomically; returns the file written.

    Raises UsageError (exit 2) for a non-regular target, a missing parent directory (unless
    ``parents``), a target outside ``within``, or a directory that cannot be written.
    """
    given = Path(path)
    if within is not None:
        rel = os.path.relpath(os.path.abspath(given), os.path.abspath(within))
        given = resolve_within(within, rel)
    target = _target(given)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    parent = target.parent
    if parents and not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"cannot create directory {parent}: {exc.strerror}", hint="check the path"
            ) from None
        if within is not None:
            resolve_within(within, os.path.relpath(target, Path(within).resolve()))
    if not parent.is_dir():
        raise UsageError(
            f"cannot write {path}: directory {parent} does not exist",
            hint="create the directory first, or choose another path",
        )
    mode: int | None = None
    try:
        st = os.stat(target)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    else:
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise UsageError(
                f"refusing to write {path}: it is {kind}",
                hint="give the path of a regular file (or a new one)",
            )
        mode = stat.S_IMODE(st.st_mode)
    tmp = parent / f".{target.name}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _NEW_FILE_MODE)
    except FileExistsError:
        tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _NEW_FILE_MODE)
    except OSError as exc:
        raise UsageError(f"cannot write in {parent}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return target


def replace_directory(new: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Move the finished directory ``new`` to ``target``, replacing what was there.

    The old directory is renamed aside first and removed only after the new one is in
    place, so ``target`` always holds a whole directory. Whether ``target`` may be replaced
    at all is the caller's decision (see ``compress``'s output rule).
    """
    new_path, target_path = Path(new), Path(target)
    old: Path | None = None
    if target_path.exists():
        old = target_path.with_name(f".{target_path.name}.old-{os.getpid()}")
        os.replace(target_path, old)
    try:
        os.replace(new_path, target_path)
    except BaseException:
        if old is not None:
            os.replace(old, target_path)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_directory(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A new temporary directory beside ``target`` for the body to fill. When the body
    returns, it replaces ``target`` whole (:func:`replace_directory`); when the body raises,
    it is removed and ``target`` stays as it was: ``target`` holds a whole result or nothing
    new."""
    target_path = Path(target)
    target_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target_path.name}.tmp-", dir=target_path.parent))
    try:
        yield tmp
        replace_directory(tmp, target_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json(path: str | os.PathLike[str], what: str) -> dict:
    """A JSON object document (``what`` names it in messages: "audit.json", "bench.json").

    Every way a file can fail to be one is a RecordError (exit 2) naming the file: missing,
    unreadable, not UTF-8, not JSON, nested past the parser's depth (a RecursionError inside
    ``json``), or not an object.
    """
    try:
        text = Path(path).read_bytes().decode("utf-8")
        data = json.loads(text)
    except FileNotFoundError:
        raise RecordError(f"{what} not found: {path}", hint="check the path") from None
    except OSError as exc:
        raise RecordError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise RecordError(
            f"{path} is not UTF-8 text (byte {exc.start})", hint=f"regenerate the {what}"
        ) from None
    except RecursionError:
        raise RecordError(
            f"{path} is nested too deeply to read as {what}", hint=f"regenerate the {what}"
        ) from None
    except ValueError as exc:
        raise RecordError(
            f"{path} is not valid JSON: {exc}", hint=f"regenerate the {what}"
        ) from None
    if not isinstance(data, dict):
        raise RecordError(
            f"{path} is not a {what} (a JSON {type(data).__name__}, not an object)",
            hint=f"pass a {what} file",
        )
    return data
