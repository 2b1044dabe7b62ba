"""File-system safety shared by every command that writes results: locks, staged folders, atomic writes.

* :func:`exclusive_lock` -- one writer per output: a second process that targets the same folder stops at once
  with one line instead of silently replacing the first one's results.
* :class:`StagedFolder` -- a folder is built beside its target and swapped in only when complete, so an error (or
  a source that lies inside the target) never costs the existing data.
* :func:`atomic_write_text`, :func:`ensure_writable` -- no half-written files; unwritable or full disks are one line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from nnunetv2_mednext.errors import MedNeXtUserError

_OS_FIXES = {
    errno.EACCES: "make it writable or choose another output folder",
    errno.EPERM: "make it writable or choose another output folder",
    errno.EROFS: "the file system is read-only; choose an output folder on a writable disk",
    errno.ENOSPC: "the disk is full; free some space or choose an output folder on another disk",
    errno.EDQUOT: "the disk quota is exceeded; free some space or choose another output folder",
}


def os_error_message(exc: OSError, path: str | os.PathLike | None = None, action: str = "write") -> str | None:
    """One line for a permission / read-only / disk-full error, or ``None`` for other errors."""
    fix = _OS_FIXES.get(exc.errno or -1)
    if fix is None:
        return None
    if action != "write" and exc.errno in (errno.EACCES, errno.EPERM):  # the fix depends on what was refused
        fix = "make it readable for this user" if action == "read" else "check its permissions for this user"
    where = path or exc.filename or "the output"
    return f"cannot {action} {where}: {exc.strerror or exc}; fix: {fix}"


def ensure_writable(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``folder`` if needed and prove a file can be written there (root ignores permission bits)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise MedNeXtUserError(f"{what} {folder} is a file; fix: pass a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        message = os_error_message(e, folder)
        if message is None:
            raise
        raise MedNeXtUserError(f"{what} {message}") from None
    return folder


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary sibling, then rename it over ``path`` (readers never see half a file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        message = os_error_message(e, path)
        if message is None:
            raise
        raise MedNeXtUserError(message) from None


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file of an output (``.<name>.lock`` beside it, so the output itself stays untouched)."""
    target = Path(target).resolve()
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def exclusive_lock(target: str | os.PathLike, what: str = "output") -> Iterator[Path]:
    """Hold an exclusive, non-blocking lock on ``target`` for the duration of the block (released on exit/crash)."""
    import fcntl

    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")  # held open for the lock's lifetime
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            raise MedNeXtUserError(
                f"another process (pid {holder}) is writing the {what} {Path(target)}; fix: wait for it to finish, "
                "or choose another output"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield path
    finally:
        fh.close()  # closing releases the lock


def overlaps(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when one path equals or lies inside the other (after resolving links)."""
    pa, pb = Path(a).resolve(), Path(b).resolve()
    return pa == pb or pa in pb.parents or pb in pa.parents


class StagedFolder:
    """Build ``final`` in a sibling folder; on success move the old one aside, swap, then delete the old one.

    ``sources`` are folders the build reads: one that equals or overlaps ``final`` is refused up front, because
    replacing ``final`` would delete them.
    """

    def __init__(self, final: str | os.PathLike, overwrite: bool, sources: tuple[str | os.PathLike, ...] = (),
                 what: str = "folder") -> None:
        self.final = Path(final)
        self.overwrite, self.what = overwrite, what
        for src in sources:
            if overlaps(src, self.final):
                raise MedNeXtUserError(
                    f"the source {src} and the {what} {self.final} overlap; replacing the {what} would delete the "
                    "source; fix: write the output somewhere else (--out or --id/--name)"
                )
        if self.final.exists() and not overwrite:
            raise MedNeXtUserError(f"{self.final} already exists; fix: pass --overwrite to replace it, or choose another --id")
        self.path = self.final.with_name(f".{self.final.name}.partial-{os.getpid()}")

    def __enter__(self) -> StagedFolder:
        if self.path.exists():
            shutil.rmtree(self.path)
        try:
            self.path.mkdir(parents=True)
        except OSError as e:
            message = os_error_message(e, self.final.parent)
            if message is None:
                raise
            raise MedNeXtUserError(message) from None
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        old = self.final.with_name(f".{self.final.name}.old-{os.getpid()}")
        if self.final.exists():
            os.replace(self.final, old)
        os.replace(self.path, self.final)
        if old.exists():
            shutil.rmtree(old)
