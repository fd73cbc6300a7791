"""The command line as a report may quote it: secrets replaced by ``***``.

certkit reads secrets from the environment or from files, never from an option's value; still, a report
that quotes its command line must not carry one, whatever was typed. :func:`redact_argv` replaces:

* the value of every option whose name says it is secret (``passphrase``, ``password``, ``secret``,
  ``token``), in both forms ``--opt VALUE`` and ``--opt=VALUE``; that includes the ``--*-file`` options
  that name where a passphrase comes from (``--passphrase-file``, ``--pfx-password-file`` ...);
* a user name and password written into a URL (``http://user:pw@host/`` becomes ``http://***@host/``).

Everything after ``--`` is an argument, not an option, and is kept (URLs in it still lose their
credentials).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

import click

__all__ = ["REDACTED", "command_line", "invoked_command_line", "redact_argv", "remember_args"]

#: Where the ``certkit`` group keeps the words it was given (``ctx.meta`` is shared by the subcommands).
_ARGS_KEY = "certkit.args"

#: What a secret is replaced by.
REDACTED = "***"

#: Words that make an option's value secret.
_SECRET_WORDS = ("passphrase", "password", "passwd", "secret", "token")

_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")


def _secret_option(name: str) -> bool:
    """``--name`` (long option, no value) is one whose value must not be shown."""
    return name.startswith("--") and any(word in name.lower() for word in _SECRET_WORDS)


def _no_credentials(arg: str) -> str:
    return _URL_CREDENTIALS.sub(rf"\1{REDACTED}@", arg)


def redact_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with every secret option value replaced by :data:`REDACTED` (see the module docstring).

    ``argv[0]`` (the program) is kept as it is. A secret option given as the last word (no value) is kept.
    """
    out: list[str] = list(argv[:1])
    hide_next, options = False, True
    for arg in argv[1:]:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        if options and arg == "--":
            options = False
        elif options and arg.startswith("--"):
            name, eq, _ = arg.partition("=")
            if _secret_option(name):
                if eq:
                    out.append(f"{name}={REDACTED}")
                else:
                    out.append(arg)
                    hide_next = True
                continue
        out.append(_no_credentials(arg))
    return out


def command_line(args: Sequence[str], program: str = "certkit") -> str:
    """The shell-quoted, redacted command line ``program args...`` (``args`` without the program)."""
    return shlex.join(redact_argv([program, *args]))


def remember_args(ctx: click.Context, args: Sequence[str]) -> None:
    """Keep the words the ``certkit`` group was called with (all but the program), for
    :func:`invoked_command_line`; every certkit group calls it before parsing its words, and the outermost
    (the first) keeps them: ``ctx.meta`` is shared with the subgroups and the commands."""
    ctx.meta.setdefault(_ARGS_KEY, list(args))


def invoked_command_line() -> str | None:
    """The redacted command line of the running ``certkit`` command, or ``None`` when the command was not
    run through the ``certkit`` group (nothing was remembered)."""
    ctx = click.get_current_context(silent=True)
    args = ctx.meta.get(_ARGS_KEY) if ctx is not None else None
    return None if args is None else command_line(args)
