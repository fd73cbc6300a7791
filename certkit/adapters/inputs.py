"""Reading user-given files, and one-line errors for every way a file operation can fail.

:func:`read_input` is how certkit reads a file the user named (a certificate, a CSR, a passphrase file,
a target list). It never blocks and never reads without bound: the path is ``stat``-ed first and only a
regular file is opened (``O_NONBLOCK``, ``O_NOCTTY``); what was opened is checked again with ``fstat``,
so a named pipe, a device, a socket or a folder is refused before a byte is read, even when it replaced
the file in between. Every failure is an :class:`~certkit.errors.InputError` (exit 2) naming the file,
what happened and what to do.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from typing import TextIO

from certkit.core.formats import MAX_INPUT_BYTES
from certkit.core.text import printable
from certkit.errors import InputError, MalformedInputError, NotFoundError, StoreError, UsageError

__all__ = ["iter_lines", "os_error", "read_error", "read_input"]

# getattr: Windows has none of these (and no FIFOs to block on); O_BINARY keeps its reads byte for byte.
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
               | getattr(os, "O_BINARY", 0))
_CHUNK = 1024 * 1024
#: characters of a path shown in a message (a name too long for the file system can be kilobytes)
_SHOWN = 240


def _show(path: str | os.PathLike[str]) -> str:
    return printable(os.fspath(path), _SHOWN)


def _size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / 1024 / 1024:.0f} MiB"
    if n >= 1024:
        return f"{n / 1024:.0f} KiB"
    return f"{n} bytes"


def _special(mode: int) -> str | None:
    """What a file that is not a regular file is, for the message; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _check(path: str, st: os.stat_result, what: str, limit: int) -> None:
    kind = _special(st.st_mode)
    if kind == "a folder":
        raise InputError(f"{_show(path)} is a folder, not a {what}.", f"Give the path of the {what}.")
    if kind is not None:
        raise InputError(f"{_show(path)} is {kind}, not a {what}; certkit reads only regular files.",
                         f"Give the path of the {what} (save a stream to a file first).")
    if st.st_size > limit:
        raise MalformedInputError(f"{_show(path)} is {_size(st.st_size)}, too large to be a {what} "
                                  f"(limit {_size(limit)}).", "Check that the right file was given.")


def read_error(exc: OSError, path: str | os.PathLike[str], what: str = "file") -> UsageError:
    """One line for a file the user named that cannot be read (exit 2): what happened and what to do."""
    name = os.fspath(path)
    shown = _show(name)
    code = exc.errno
    if code == errno.ENOENT:
        try:
            target = os.readlink(name)
        except (OSError, ValueError):
            target = None
        if target is not None:
            return NotFoundError(f"{shown} is a symbolic link to {_show(target)}, which does not exist.",
                                 f"Point the link at the {what}, or give the {what}'s own path.")
        return NotFoundError(f"{shown} does not exist.", f"Check the path of the {what}.")
    if code in (errno.EACCES, errno.EPERM):
        return InputError(f"{shown} cannot be read: permission denied.", "Check the file's permissions.")
    if code == errno.ELOOP:
        return InputError(f"{shown} cannot be read: its symbolic links form a loop.",
                          f"Point the link at the {what}, or give the {what}'s own path.")
    if code == errno.ENAMETOOLONG:
        return InputError(f"{shown} cannot be read: the name is too long for the file system.",
                          f"Check the path of the {what}, or move it to a shorter one.")
    if code == errno.ENOTDIR:
        return InputError(f"{shown} cannot be read: a part of the path is a file, not a folder.",
                          f"Check the path of the {what}.")
    if code == errno.EISDIR:
        return InputError(f"{shown} is a folder, not a {what}.", f"Give the path of the {what}.")
    if code == errno.EIO:
        return InputError(f"{shown} cannot be read: input/output error.",
                          "Check the disk (see dmesg), or copy the file from a good source.")
    if code in (errno.ENXIO, errno.ENODEV, errno.EOPNOTSUPP):
        return InputError(f"{shown} cannot be read: it is not a regular file.", f"Give the path of the {what}.")
    reason = exc.strerror or type(exc).__name__
    return InputError(f"{shown} cannot be read: {reason[0].lower() + reason[1:]}.", f"Check the path of the {what}.")


def read_input(path: str | os.PathLike[str], *, what: str = "file", limit: int = MAX_INPUT_BYTES) -> bytes:
    """Read a user-given regular file of at most ``limit`` bytes; errors name the file and say what to do.

    Never blocks: a FIFO, device, socket or folder is refused before it is read (``stat``, then
    ``open(O_NONBLOCK)`` and ``fstat``).
    """
    name = os.fspath(path)
    if not name:
        raise InputError(f"An empty path was given for the {what}.", f"Give the path of the {what}.")
    if "\x00" in name:
        raise InputError(f"{_show(name)} is not a valid path: it contains a NUL character.",
                         f"Check the path of the {what}.")
    try:
        _check(name, os.stat(name), what, limit)
        fd = os.open(name, _OPEN_FLAGS)
        try:
            _check(name, os.fstat(fd), what, limit)  # what was opened, not what was there a moment ago
            chunks: list[bytes] = []
            total = 0
            while total <= limit:
                chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
        finally:
            os.close(fd)
    except OSError as exc:
        raise read_error(exc, name, what) from None
    if total > limit:  # it grew after fstat
        raise MalformedInputError(f"{_show(name)} is larger than {_size(limit)}, too large to be a {what}.",
                                  "Check that the right file was given.")
    return b"".join(chunks)


def os_error(exc: OSError, what: str) -> InputError | StoreError:
    """One line for a failed write: problems with the path or permissions are the caller's to fix (exit 2),
    a full or failing disk is a failure (exit 1)."""
    reason = exc.strerror or str(exc)
    what = printable(what, 2 * _SHOWN)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return InputError(f"Cannot write {what}: {reason}.",
                          "Choose a folder you can write to, or fix its permissions.")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreError(f"Cannot write {what}: {reason}.", "Free some disk space and try again.")
    if exc.errno == errno.ELOOP:
        return InputError(f"Cannot write {what}: its symbolic links form a loop.",
                          "Fix the link, or choose another path.")
    if exc.errno == errno.ENAMETOOLONG:
        return InputError(f"Cannot write {what}: the name is too long for the file system.",
                          "Choose a shorter path.")
    if exc.errno in (errno.ENOTDIR, errno.EISDIR):
        return InputError(f"Cannot write {what}: {reason}.", "Check the path: a file stands where a folder "
                          "should be, or the reverse.")
    if exc.errno == errno.EIO:
        return StoreError(f"Cannot write {what}: input/output error.",
                          "Check the disk (see dmesg), or write somewhere else.")
    return StoreError(f"Cannot write {what}: {reason}.", "Check the folder and try again.")


def iter_lines(path: str | os.PathLike[str], *, what: str = "file") -> Iterator[str]:
    """The lines of a user-given regular file of any size, read as they are needed (a list of millions of
    targets is never held whole); checked as :func:`read_input` checks (no FIFO, device or folder) first."""
    name = os.fspath(path)
    if not name or "\x00" in name:
        read_input(name, what=what)  # its one-line error for an empty or NUL path
    try:
        _check(name, os.stat(name), what, 1 << 62)
        f = open(name, encoding="utf-8", errors="replace")  # noqa: SIM115 -- closed by the generator
    except OSError as e:
        raise read_error(e, name, what) from None
    return _lines_of(f)


def _lines_of(f: TextIO) -> Iterator[str]:
    with f:
        yield from f
