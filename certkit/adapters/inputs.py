"""Reading user-given files, and one-line errors for failed file operations."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from certkit.core.formats import MAX_INPUT_BYTES
from certkit.errors import InputError, MalformedInputError, NotFoundError, StoreError

__all__ = ["os_error", "read_input"]


def os_error(exc: OSError, what: str) -> InputError | StoreError:
    """One line for a failed file operation: permission problems are the caller's to fix (exit 2)."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return InputError(f"Cannot write {what}: {reason}.",
                          "Choose a folder you can write to, or fix its permissions.")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreError(f"Cannot write {what}: {reason}.", "Free some disk space and try again.")
    return StoreError(f"Cannot write {what}: {reason}.", "Check the folder and try again.")


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
