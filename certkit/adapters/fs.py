"""Files: atomic writes, private modes, locks, and bounded reads.

Every file certkit writes goes through :func:`atomic_write`: a temporary file in the same folder,
``fsync``, then ``rename``, so a reader (or a crash) sees the old file or the new one, never half.
Keys are created 0600 from the first byte. Nothing is ever overwritten unless the caller says so.

Portable: nothing POSIX-only is imported. The lock is ``filelock`` (``flock`` on POSIX, ``msvcrt`` on
Windows); without hard links (Windows, vfat, some SMB shares) a file is published by ``rename``, which
Windows refuses when the target exists and POSIX callers do under the CA lock.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from certkit.adapters.inputs import os_error, read_input
from certkit.errors import AlreadyExistsError, InputError, StoreError

__all__ = ["PRIVATE", "PRIVATE_DIR", "PUBLIC", "LockBusy", "Staged", "atomic_write", "atomic_write_many", "file_lock",
           "make_dirs", "os_error", "read_input", "sha256_file", "wipe"]

PRIVATE = 0o600
PUBLIC = 0o644
#: CA homes and trust stores: only their owner may enter them, whatever the umask.
PRIVATE_DIR = 0o700


def make_dirs(folder: Path, mode: int | None = None) -> None:
    """Create ``folder`` and its missing parents. Each folder created gets ``mode`` exactly, whatever the
    umask (default 0755: never writable by others, even under ``umask 000``); it is made 0700 first, so
    there is no moment at which another user could drop a file into it. Existing folders stay as they are."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    for p in reversed(missing):
        try:
            p.mkdir(mode=0o700)
        except FileExistsError:
            if p.is_dir():
                continue  # another process made it
            raise
        with contextlib.suppress(OSError):
            os.chmod(p, 0o755 if mode is None else mode)


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


def temp_pattern(tag: str) -> str:
    """The glob that finds the temporary files (``.tmp``) and set-aside originals (``.old``) of one write."""
    return f".*.{tag}.*"


def _write_temp(path: Path, data: bytes, mode: int, *, sync: bool = True, tag: str | None = None) -> str:
    import tempfile  # here, not at the top: with shutil and random it is start-up time every command pays

    folder = path.parent
    try:
        make_dirs(folder)
        # A tagged temporary file can be found again by whoever cleans up after an interrupted run.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{tag}." if tag else f".{path.name}.", suffix=".tmp",
                                   dir=folder)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        raise InputError(f"Cannot write into {folder}: {blocker} is a file, not a folder.",
                         "Choose another output folder.") from None
    except OSError as exc:
        raise os_error(exc, f"into {folder}") from None
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)  # the exact mode, whatever the umask (mkstemp made it 0600)
        else:  # Windows (before Python 3.13): only the read-only bit exists
            os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
    except BaseException as exc:
        wipe(tmp)
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
        link = getattr(os, "link", None)
        try:
            if link is None or os.name == "nt":
                raise OSError(errno.ENOSYS, "no hard links")
            # link() fails if the target exists: no window in which another writer's file is replaced.
            link(tmp, path)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
                raise
            # No hard links (Windows, vfat, some SMB shares): check, then rename. Windows' rename refuses an
            # existing target by itself; on POSIX another writer could slip in between the two steps, but
            # certkit's own writers to a CA's files hold the CA lock, so they do not race each other.
            if path.exists():
                raise FileExistsError(errno.EEXIST, "exists", str(path)) from None
            os.rename(tmp, path)
            return
        os.unlink(tmp)
    except FileExistsError:
        wipe(tmp)
        raise _exists(path) from None
    except OSError as exc:
        wipe(tmp)
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
    removed again (key material overwritten first) and files it replaced (``overwrite``) are put back.
    :meth:`unpublish` does the same after a successful publish, when the step it belongs to fails (the
    index transaction does not commit); :meth:`finish` drops the replaced originals once it committed.
    :meth:`discard` drops the temporary files. With a ``tag``, every temporary file and set-aside original
    is named ``.<name>.<tag>.*`` (:func:`temp_pattern`), so a later run can find what a killed one left.
    """

    def __init__(self, files: list[tuple[Path, bytes, int]], *, overwrite: bool = False,
                 tag: str | None = None) -> None:
        self.overwrite = overwrite
        self.tag = tag
        self._temps: list[tuple[str, Path, int]] = []
        self._set_aside: list[tuple[Path, Path, int]] = []  # (original moved aside, its own name, new mode)
        self.published: list[tuple[Path, int]] = []
        seen: set[Path] = set()
        for path, _, _ in files:
            if path in seen:
                raise InputError(f"{path} would be written twice.", "Each name may appear only once.")
            seen.add(path)
            if not overwrite and path.exists():
                raise _exists(path)
        try:
            for path, data, mode in files:
                self._temps.append((_write_temp(path, data, mode, sync=False, tag=tag), path, mode))
            _sync([t for t, _, _ in self._temps])
        except BaseException:
            self.discard()
            raise

    def publish(self) -> list[Path]:
        try:
            for tmp, path, mode in self._temps:
                if self.overwrite and os.path.lexists(path):
                    # Set the original aside (a rename: no space needed) so that a failure can put it back.
                    aside = path.with_name(f".{path.name}.{self.tag or 'x'}.old")
                    try:
                        os.replace(path, aside)
                    except OSError as exc:
                        raise os_error(exc, str(path)) from None
                    self._set_aside.append((aside, path, mode))
                _publish(tmp, path, self.overwrite)
                self.published.append((path, mode))
        except BaseException:
            self.unpublish()
            raise
        self._temps = []
        for folder in {p.parent for p, _ in self.published}:
            _fsync_dir(folder)
        return [p for p, _ in self.published]

    def unpublish(self) -> bool:
        """Undo :meth:`publish`: remove what it made visible, put back what it replaced, drop the temporaries.
        False if something could not be undone (it is left for a later run to find by the tag)."""
        ok = True
        for path, mode in reversed(self.published):
            ok = wipe(path, secret=mode == PRIVATE) and ok
        for aside, path, _ in reversed(self._set_aside):
            try:
                os.replace(aside, path)
            except OSError:
                ok = False
        self.published = []
        self._set_aside = []
        return self.discard() and ok

    def finish(self) -> None:
        """The step committed: drop the originals that were replaced (old keys overwritten first)."""
        for aside, _, mode in self._set_aside:
            wipe(aside, secret=True if mode == PRIVATE else None)
        self._set_aside = []

    def discard(self) -> bool:
        """Remove the temporary files (overwritten first: they may hold keys); False if one stays."""
        ok = all([wipe(tmp) for tmp, _, _ in self._temps])
        self._temps = []
        return ok


def _sync(paths: list[str]) -> None:
    if hasattr(os, "sync"):
        os.sync()  # one sync for the whole batch instead of one fsync per file
        return
    for path in paths:  # Windows: fsync needs a handle opened for writing
        fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def sha256_file(path: str | os.PathLike[str]) -> str | None:
    """The SHA-256 of a file's content, or ``None`` when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return None


def wipe(path: str | os.PathLike[str], *, secret: bool | None = True) -> bool:
    """Remove a file; with ``secret`` overwrite its content with zeros first (it may hold a private key),
    with ``secret=None`` only when it is not readable by others. False if it could not be removed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    if secret is None:
        secret = not st.st_mode & 0o077
    if secret and st.st_size and os.path.isfile(path) and not os.path.islink(path):
        # Overwriting in place needs no free space; on a copy-on-write file system it is best effort.
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_WRONLY | getattr(os, "O_BINARY", 0))
            try:
                os.write(fd, bytes(st.st_size))
                os.fsync(fd)
            finally:
                os.close(fd)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def atomic_write_many(files: list[tuple[Path, bytes, int]], *, overwrite: bool = False) -> list[Path]:
    """Write several files as one step: all are checked, written and synced before any is published,
    and either all are published or none."""
    staged = Staged(files, overwrite=overwrite)
    published = staged.publish()
    staged.finish()
    return published


class LockBusy(StoreError):
    """A lock taken with ``wait=False`` is held by another process (a live one: the OS frees a dead one's)."""


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], *, folder_mode: int | None = None,
              wait: bool = True) -> Iterator[None]:
    """An exclusive lock held for the ``with`` block, across processes (``filelock``: ``flock`` on POSIX,
    ``msvcrt.locking`` on Windows; the operating system releases it when the holder dies).

    Not re-entrant across calls: a process must not take the same lock twice. With ``wait=False`` a lock
    held by another process raises :class:`LockBusy` (a :class:`~certkit.errors.StoreError`) at once.
    """
    import warnings

    with warnings.catch_warnings():  # without flock (not Windows) filelock warns that it falls back to a soft lock
        warnings.simplefilter("ignore")
        import filelock  # here: only writers pay for importing it

    lock_path = Path(path)
    try:
        make_dirs(lock_path.parent, folder_mode)
        # 0600 where modes exist (filelock applies it with fchmod); Windows has ACLs, not modes
        lock = filelock.FileLock(str(lock_path), mode=0o600) if hasattr(os, "fchmod") else filelock.FileLock(
            str(lock_path))
        lock.acquire(timeout=-1 if wait else 0)
    except filelock.Timeout:
        raise LockBusy(f"{lock_path} is held by another process.", "Try again when it has finished.") from None
    except OSError as exc:
        raise os_error(exc, f"the lock file {lock_path}") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            lock.release()
