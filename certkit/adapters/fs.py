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
from collections.abc import Iterator
from pathlib import Path

from certkit.adapters.inputs import os_error, read_input
from certkit.errors import AlreadyExistsError, InputError

__all__ = ["PRIVATE", "PUBLIC", "Staged", "atomic_write", "atomic_write_many", "file_lock", "os_error", "read_input"]

PRIVATE = 0o600
PUBLIC = 0o644


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _exists(path: Path) -> AlreadyExistsError:
    return AlreadyExistsError(f"{path} already exists and certkit does not overwrite files.",
                              "Move it away, choose another --out folder, or pass --force.")


def _write_temp(path: Path, data: bytes, mode: int, *, sync: bool = True) -> str:
    import tempfile  # here, not at the top: with shutil and random it is start-up time every command pays

    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        raise InputError(f"Cannot write into {folder}: {blocker} is a file, not a folder.",
                         "Choose another output folder.") from None
    except OSError as exc:
        raise os_error(exc, f"into {folder}") from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise os_error(exc, str(path)) from None
        raise
    return tmp


def _publish(tmp: str, path: Path, overwrite: bool) -> None:
    """Move the temporary file to ``path``; without ``overwrite``, never replace an existing file."""
    try:
        if overwrite:
            os.replace(tmp, path)
            return
        try:
            # link() fails if the target exists: no window in which another writer's file is replaced.
            os.link(tmp, path)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
                raise
            # A file system without hard links (vfat, some SMB shares): check, then rename. Another
            # writer could slip in between the two steps; certkit's own issuers publish inside the CA
            # index's write transaction, so they do not race each other.
            if path.exists():
                raise FileExistsError(errno.EEXIST, "exists", str(path)) from None
            os.rename(tmp, path)
            return
        os.unlink(tmp)
    except FileExistsError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _exists(path) from None
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise os_error(exc, str(path)) from None


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = PUBLIC,
                 overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically with ``mode``; refuse to replace an existing file unless told."""
    target = Path(path)
    if not overwrite and target.exists():
        raise _exists(target)
    tmp = _write_temp(target, data, mode)
    _publish(tmp, target, overwrite)
    _fsync_dir(target.parent)
    return target


class Staged:
    """Files written and synced under temporary names, not yet visible under their own.

    :meth:`publish` makes them all visible, or (on any failure) none: what it had already published is
    removed again. :meth:`discard` drops the temporary files. Issuance stages the files, records the
    certificates, publishes inside the same index transaction, and undoes the publication if the
    transaction does not commit: a certificate is never recorded without its files, nor the reverse.
    """

    def __init__(self, files: list[tuple[Path, bytes, int]], *, overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self._temps: list[tuple[str, Path]] = []
        self.published: list[Path] = []
        seen: set[Path] = set()
        for path, _, _ in files:
            if path in seen:
                raise InputError(f"{path} would be written twice.", "Each name may appear only once.")
            seen.add(path)
            if not overwrite and path.exists():
                raise _exists(path)
        try:
            for path, data, mode in files:
                self._temps.append((_write_temp(path, data, mode, sync=False), path))
            os.sync()  # one sync for the whole batch instead of one fsync per file
        except BaseException:
            self.discard()
            raise

    def publish(self) -> list[Path]:
        try:
            for tmp, path in self._temps:
                _publish(tmp, path, self.overwrite)
                self.published.append(path)
        except BaseException:
            self.unpublish()
            self.discard()
            raise
        self._temps = []
        for folder in {p.parent for p in self.published}:
            _fsync_dir(folder)
        return list(self.published)

    def unpublish(self) -> None:
        """Remove what :meth:`publish` made visible (only files it created; never with ``overwrite``)."""
        if not self.overwrite:
            for path in self.published:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        self.published = []

    def discard(self) -> None:
        for tmp, _ in self._temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._temps = []


def atomic_write_many(files: list[tuple[Path, bytes, int]], *, overwrite: bool = False) -> list[Path]:
    """Write several files as one step: all are checked, written and synced before any is published,
    and either all are published or none."""
    return Staged(files, overwrite=overwrite).publish()


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """An exclusive advisory lock (``flock``) held for the ``with`` block, across processes."""
    lock_path = Path(path)
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise os_error(exc, f"the lock file {lock_path}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

