"""``certkit probe TARGET...``: the STARTTLS probe on the command line.

Exit codes: 0 no error findings, 1 error findings, 2 usage, 3 nothing could be reached.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from certkit.adapters.fs import read_input
from certkit.adapters.transport import ClientIdentity
from certkit.adapters.truststore import TrustStore, default_store_path
from certkit.cli.common import KEY_PASSPHRASE_ENV, echo_json, home_option, resolve_home
from certkit.core.formats import load_certificates
from certkit.core.keys import load_private_key
from certkit.errors import InputError
from certkit.probe import ProbeResult, exit_code, probe_sync

__all__ = ["COMMANDS"]


def _identity(cert: str | None, key: str | None) -> ClientIdentity | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise InputError("--client-cert and --client-key go together.", "Give both, or neither.")
    certs = load_certificates(read_input(cert, what="client certificate"), source=cert)
    passphrase = os.environ.get(KEY_PASSPHRASE_ENV)
    pkey = load_private_key(read_input(key, what="client key"), passphrase.encode() if passphrase else None,
                            source=key)
    return ClientIdentity(certs[0], pkey, tuple(certs[1:]))


def _targets(targets: tuple[str, ...], from_file: str | None) -> list[str]:
    out = list(targets)
    if from_file:
        for line in read_input(from_file, what="target list").decode("utf-8", "replace").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                out.append(line)
    if not out:
        raise InputError("No target was given.", "Name a domain, host:port or [ip]:port, or use --from FILE.")
    return out


def _print(results: list[ProbeResult], verbose: bool) -> None:
    for r in results:
        for f in r.findings:
            click.echo(f"{r.target}: {f.severity}: {f.code}: {f.detail}")
        for a in r.addresses:
            where = f"{a.host} [{a.address}]:{a.port}" if a.host != a.address else f"[{a.address}]:{a.port}"
            click.echo(f"{where}: {a.verdict}")
            tls = a.session.tls if a.session else None
            if tls is not None:
                click.echo(f"  TLS: {tls.version} {tls.cipher}; chain: "
                           + " <- ".join(c.subject.rfc4514_string() for c in tls.peer_chain))
            for f in a.findings:
                click.echo(f"  {f.severity}: {f.code}: {f.detail}")
                if f.entry.exchange_text and f.severity == "error":
                    click.echo(f"    Exchange shows: {f.entry.exchange_text}")
                click.echo(f"    fix: {f.entry.remedy}")
            if verbose and a.session is not None:
                for line in a.session.transcript:
                    click.echo(f"    {line}")


@click.command("probe")
@click.argument("targets", nargs=-1)
@click.option("--port", default=25, show_default=True, help="Port for domains and hosts given without one.")
@click.option("--implicit-tls", is_flag=True, help="TLS from the first byte (port 465 style), no STARTTLS.")
@click.option("--client-cert", type=click.Path(dir_okay=False), default=None,
              help="Our certificate (PEM, leaf first, chain after) to present.")
@click.option("--client-key", type=click.Path(dir_okay=False), default=None,
              help=f"Its private key (passphrase from ${KEY_PASSPHRASE_ENV}).")
@click.option("--store", type=click.Path(file_okay=False), default=None, help="Trust store (default: <home>/trust).")
@click.option("--managed-only", is_flag=True, help="Trust only the managed anchors, not certifi's public roots.")
@click.option("--validator", type=click.Choice(["exchange", "postfix"]), default="exchange", show_default=True,
              help="Whose rules decide: exchange requires checkable revocation, postfix checks none.")
@click.option("--domain", default=None, help="Domain Security name rule (default: the target domain).")
@click.option("--name", default=None, help="Host-name rule instead: the name the certificate must carry.")
@click.option("--mail-from", default=None, help="MAIL FROM address (default: probe@<our domain>).")
@click.option("--rcpt", default=None, help="RCPT TO address (default: postmaster@<their domain>).")
@click.option("--helo", default=None, help="EHLO name (default: our certificate's name, else localhost).")
@click.option("--nameserver", default=None, help="DNS server as IP[:PORT] (default: the system's).")
@click.option("--timeout", default=10.0, show_default=True, type=float, help="Seconds per step.")
@click.option("--concurrency", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--from", "from_file", type=click.Path(dir_okay=False), default=None, help="Read targets from FILE.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Show the transcript.")
@home_option
def probe_cmd(targets: tuple[str, ...], port: int, implicit_tls: bool, client_cert: str | None,
              client_key: str | None, store: str | None, managed_only: bool, validator: str, domain: str | None,
              name: str | None, mail_from: str | None, rcpt: str | None, helo: str | None, nameserver: str | None,
              timeout: float, concurrency: int, from_file: str | None, as_json: bool, verbose: bool,
              home: str | None) -> None:
    """Talk to TARGET's mail servers as a sending Edge would (never sending DATA), and explain failures.

    TARGET is a mail domain (resolved through MX), host:port or [ip]:port. Exit 0 when no error was
    found, 1 when one was, 2 on misuse, 3 when nothing could be reached.
    """
    identity = _identity(client_cert, client_key)
    all_targets = _targets(targets, from_file)
    path = Path(store) if store else default_store_path(resolve_home(home))
    anchors = TrustStore(path).anchor_set(managed_only=managed_only)
    results = probe_sync(all_targets, anchors=anchors, identity=identity, port=port, implicit_tls=implicit_tls,
                         validator=validator, domain=domain, name=name, mail_from=mail_from, rcpt_to=rcpt,
                         helo_name=helo, nameserver=nameserver, timeout=timeout, concurrency=concurrency)
    if as_json:
        echo_json({"validator": validator, "results": [r.to_dict() for r in results],
                   "exit_code": exit_code(results)})
    else:
        _print(results, verbose)
    sys.exit(exit_code(results))


COMMANDS: list[click.Command] = [probe_cmd]
