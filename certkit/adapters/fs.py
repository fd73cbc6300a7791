"""Files: atomic writes, private modes, locks, and bounded reads.

Every file certkit writes goes through :func:`atomic_write`: a temporary file in the same folder,
``fsync``, then ``rename``, so a reader (or a crash) sees the old file or the new one, never half.
Keys are created 0600 from the first byte. Nothing is ever overwritten unless the caller says so.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from certkit.core.formats import MAX_INPUT_BYTES
from certkit.errors import AlreadyExistsError, InputError, MalformedInputError, NotFoundError, StoreError

__all__ = ["PRIVATE", "PUBLIC", "atomic_write", "atomic_write_many", "file_lock", "read_input"]

PRIVATE = 0o600
PUBLIC = 0o644


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_temp(path: Path, data: bytes, mode: int, *, sync: bool = True) -> str:
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"Cannot create the folder {folder}: {exc.strerror}.",
                         "Choose a folder you can write to.") from None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def _publish(tmp: str, path: Path, overwrite: bool) -> None:
    try:
        if overwrite:
            os.replace(tmp, path)
        else:
            # link() fails if the target exists: no window in which another writer's file is replaced.
            os.link(tmp, path)
            os.unlink(tmp)
    except FileExistsError:
        os.unlink(tmp)
        raise AlreadyExistsError(f"{path} already exists and certkit does not overwrite files.",
                                 "Move it away, choose another --out folder, or pass --force.") from None
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EXDEV):
            # File systems without hard links: fall back to an existence check and a rename.
            if path.exists() and not overwrite:
                raise AlreadyExistsError(f"{path} already exists and certkit does not overwrite files.",
                                         "Move it away or choose another --out folder.") from None
            raise
        raise StoreError(f"Cannot write {path}: {exc.strerror}.", "Check the folder's permissions.") from None


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = PUBLIC,
                 overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically with ``mode``; refuse to replace an existing file unless told."""
    target = Path(path)
    if not overwrite and target.exists():
        raise AlreadyExistsError(f"{target} already exists and certkit does not overwrite files.",
                                 "Move it away, choose another --out folder, or pass --force.")
    tmp = _write_temp(target, data, mode)
    _publish(tmp, target, overwrite)
    _fsync_dir(target.parent)
    return target


def atomic_write_many(files: list[tuple[Path, bytes, int]], *, overwrite: bool = False) -> list[Path]:
    """Write several files as one step: all are checked, written and synced before any is published.

    Used by batch issuance, where one ``sync`` for many files keeps the cost per certificate low.
    """
    if not overwrite:
        for path, _, _ in files:
            if path.exists():
                raise AlreadyExistsError(f"{path} already exists and certkit does not overwrite files.",
                                         "Move it away, choose another --out folder, or pass --force.")
    temps: list[tuple[str, Path]] = []
    try:
        for path, data, mode in files:
            temps.append((_write_temp(path, data, mode, sync=False), path))
        os.sync()
        published = []
        for tmp, path in temps:
            _publish(tmp, path, overwrite)
            published.append(path)
    except BaseException:
        for tmp, _ in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    for folder in {p.parent for p in published}:
        _fsync_dir(folder)
    return published


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """An exclusive advisory lock (``flock``) held for the ``with`` block, across processes."""
    lock_path = Path(path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_input(path: str | os.PathLike[str], *, what: str = "file", limit: int = MAX_INPUT_BYTES) -> bytes:
    """Read a user-given file with a size limit; errors name the file and say what to do."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if p.is_dir():
            raise InputError(f"{p} is a folder, not a {what}.", f"Give the path of the {what}.")
        if size > limit:
            raise MalformedInputError(f"{p} is {size // 1024 // 1024} MiB, too large to be a {what}.",
                                      "Check that the right file was given.")
        with p.open("rb") as fh:
            return fh.read(limit + 1)
    except FileNotFoundError:
        raise NotFoundError(f"{p} does not exist.", f"Check the path of the {what}.") from None
    except PermissionError:
        raise InputError(f"{p} cannot be read: permission denied.", "Check the file's permissions.") from None
