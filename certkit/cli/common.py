"""What every certkit command shares: the error boundary, the CA home, secrets, output helpers.

Exit codes (documented in the README):

* 0 -- success
* 1 -- failure (the request was fine but failed, or a check found errors)
* 2 -- misuse (bad option, bad input file, wrong passphrase, would overwrite)
* 3 -- nothing could be reached (probe, preflight)
* 130 -- interrupted
"""

from __future__ import annotations

import datetime as dt
import difflib
import errno
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from certkit.adapters.inputs import read_input
from certkit.adapters.truststore import TrustStore, default_store_path
from certkit.cli.colour import severity
from certkit.core.text import printable
from certkit.errors import CertkitError, InputError, PassphraseError, StoreError, UsageError

if TYPE_CHECKING:
    from cryptography import x509

F = TypeVar("F", bound=Callable[..., Any])

HOME_ENV = "CERTKIT_HOME"
CA_PASSPHRASE_ENV = "CERTKIT_CA_PASSPHRASE"
PFX_PASSWORD_ENV = "CERTKIT_PFX_PASSWORD"
KEY_PASSPHRASE_ENV = "CERTKIT_KEY_PASSPHRASE"


def say(text: str, *, err: bool = False) -> None:
    """Print one line that holds text from outside (a certificate's names, a file name, a server's words).

    :func:`~certkit.core.text.printable` escapes control characters, so that text cannot add a line,
    drive the terminal or reorder what is shown.
    """
    click.echo(printable(text), err=err)


def fail(err: CertkitError) -> None:
    """Print one line for ``err`` and exit with its code (file and certificate names in it escaped)."""
    click.echo(f"certkit: {severity('error', err=True)}: {printable(str(err))}", err=True)
    sys.exit(err.exit_code)


def file_error(exc: OSError) -> CertkitError:
    """The last resort for a file operation that failed where no caller said what it was: one line that
    names the file; a full or failing disk is a failure (1), anything else the caller's to fix (2)."""
    name = printable(os.fsdecode(exc.filename), 240) if exc.filename is not None else "a file"
    reason = exc.strerror or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
        return StoreError(f"{name}: {reason}.", "Check the disk (free space, dmesg) and try again.")
    return UsageError(f"{name}: {reason}.", "Check the path and its permissions, then try again.")


class CertkitGroup(click.Group):
    """A click group that turns every :class:`CertkitError` into one line and its exit code, and that answers
    an unknown command with the closest ones (``No such command 'prob'. Did you mean 'probe'?``)."""

    def resolve_command(self, ctx: click.Context,
                        args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError:
            name = args[0] if args else ""
            if name.startswith("-") or self.get_command(ctx, name) is not None:
                raise
            # Our own message, the same on every click version and for the lazily loaded top level (whose
            # commands click's own suggestion, from 8.4, does not see).
            names = self.list_commands(ctx)
            found = [c for c in names if name and c.startswith(name)] + difflib.get_close_matches(name, names)
            close = [repr(c) for c in dict.fromkeys(found)][:3]
            hint = ""
            if close:
                hint = f" Did you mean {close[0] if len(close) == 1 else ', '.join(close[:-1]) + ' or ' + close[-1]}?"
            raise click.UsageError(f"No such command {name!r}.{hint}", ctx=ctx) from None

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        from certkit.cli.cmdline import remember_args

        remember_args(ctx, args)  # a report may quote its command line (secrets redacted)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CertkitError as err:
            fail(err)
        except KeyboardInterrupt:
            click.echo("certkit: interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:
            sys.exit(1)
        except OSError as exc:
            if exc.filename is None:  # not a file (a socket, a network error): not for this boundary
                raise
            fail(file_error(exc))
        return None


def resolve_home(home: str | None) -> Path:
    """``--home``, else ``$CERTKIT_HOME``, else ``./ca``."""
    return Path(home or os.environ.get(HOME_ENV) or "ca")


def store_path(home: str | None, store: str | None) -> Path:
    """``--store``, else the trust store of the CA home (:func:`resolve_home`)."""
    return Path(store) if store else default_store_path(resolve_home(home))


def open_store(home: str | None, store: str | None, *, check: bool = True) -> TrustStore:
    """The trust store that ``--home``/``--store`` name (``check=False``: skip the size check on open)."""
    return TrustStore(store_path(home, store), check=check)


def our_ca_root(home: Path, chain: Sequence[x509.Certificate], leaf: x509.Certificate) -> x509.Certificate | None:
    """Our CA's root, when the home holds the CA that issued the top of our chain (no passphrase needed), and
    the chain has no root of its own.

    ``certkit ca issue`` writes ``<fqdn>.chain.pem`` with the leaf and intermediates but not the root;
    without the root our own chain cannot be followed to its end.
    """
    from certkit.core.trust import is_self_signed

    if is_self_signed(leaf) or any(is_self_signed(c) for c in chain) or not (home / "ca.db").is_file():
        return None
    from certkit.ca import CertificateAuthority

    with CertificateAuthority.open(home) as ca:
        root = ca.root
    top = chain[-1] if chain else leaf
    return root if top.issuer == root.subject else None


def key_passphrase() -> bytes | None:
    """The passphrase of our private key files: ``$CERTKIT_KEY_PASSPHRASE``, else none."""
    value = os.environ.get(KEY_PASSPHRASE_ENV)
    return value.encode() if value else None


def home_option(f: F) -> F:
    return click.option("--home", "home", type=click.Path(file_okay=False), default=None,
                        help="CA home folder (default: $CERTKIT_HOME, else ./ca).")(f)


def sts_options(what: str) -> Callable[[F], F]:
    """``--mta-sts``, ``--sts-cafile`` and ``--sts-policy-port`` (probe and preflight); ``what`` says what
    is judged, for the help text."""

    def decorate(f: F) -> F:
        f = click.option("--sts-policy-port", default=443, show_default=True, type=click.IntRange(1, 65535),
                         help="HTTPS port of the MTA-STS policy host (a lab).")(f)
        f = click.option("--sts-cafile", type=click.Path(dir_okay=False), default=None,
                         help="PEM roots to use instead of the Web PKI for MTA-STS (a lab).")(f)
        return click.option("--mta-sts", "mta_sts", type=click.Choice(["auto", "off"]), default="auto",
                            show_default=True, help=f"MTA-STS and TLS-RPT (RFC 8461, 8460) {what}; off looks up "
                                                    "nothing.")(f)

    return decorate


def read_secret(*, env: str, file: str | None, prompt: str, confirm: bool = False,
                what: str = "passphrase", option: str = "--passphrase-file") -> bytes:
    """A secret from ``$ENV``, a file, or an interactive prompt -- never from the command line."""
    if file:
        data = read_input(file, what=f"{what} file", limit=64 * 1024)
        secret = data.splitlines()[0] if data.splitlines() else b""
        if not secret:
            raise PassphraseError(f"The {what} file {file} is empty.", f"Write the {what} on its first line.")
        return secret
    value = os.environ.get(env)
    if value:
        return value.encode("utf-8")
    if sys.stdin.isatty():
        entered: str = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
        if entered:
            return entered.encode("utf-8")
    raise PassphraseError(f"No {what} was given.", f"Set ${env}, use {option} FILE, or run interactively.")


def echo_json(data: Any) -> None:
    """JSON on stdout: indented for a person at a terminal, compact for a pipe (the C encoder; for the
    probe's transcripts of hundreds of sessions that is ten times faster)."""
    try:
        pretty = sys.stdout.isatty()
    except (AttributeError, ValueError):
        pretty = False
    click.echo(json.dumps(data, indent=2 if pretty else None, sort_keys=False, default=str))


def parse_at(text: str) -> dt.datetime:
    """``--at``: an ISO 8601 time with ``Z`` or an offset, or a bare date (midnight UTC).

    A date and time without a zone is refused: it would be read in whatever zone this machine is in.
    """
    t = text.strip()
    try:
        value = dt.datetime.fromisoformat(t[:-1] + "+00:00" if t[-1:] in ("Z", "z") else t)
    except (ValueError, IndexError):
        raise InputError(f"--at {text!r} is not an ISO 8601 time.", "Write e.g. 2027-01-01T00:00:00Z.") from None
    if value.tzinfo is None:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", t):
            raise InputError(f"--at {text!r} has no time zone.", "Add Z (UTC) or an offset such as +01:00.")
        value = value.replace(tzinfo=dt.UTC)
    if not 1950 <= value.year <= 9000:
        raise InputError(f"--at {text!r} is outside the years certificates use.", "Give a year from 1950 to 9000.")
    return value.astimezone(dt.UTC)


def stderr_is_terminal() -> bool:
    """Progress displays go to stderr, and only when it is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
