"""``certkit probe TARGET...``: the STARTTLS probe on the command line.

Exit codes: 0 no error findings, 1 error findings, 2 usage, 3 nothing could be reached.
"""

from __future__ import annotations

import sys

import click

from certkit.adapters.identity import load_identity
from certkit.adapters.inputs import read_input
from certkit.adapters.transport import ClientIdentity
from certkit.checks.mtasts import read_cafile
from certkit.checks.ourcert import OurCertificate
from certkit.checks.probe import AddressResult, ProbeOptions, ProbeResult, exit_code, probe_sync
from certkit.cli.bulk import BulkRun
from certkit.cli.colour import severity, verdict
from certkit.cli.common import (
    KEY_PASSPHRASE_ENV,
    echo_json,
    home_option,
    key_passphrase,
    open_store,
    our_ca_root,
    resolve_home,
    sts_options,
)
from certkit.cli.mtasts import report_lines
from certkit.cli.progress import AddressBar, worth_a_bar
from certkit.core.text import plural, printable
from certkit.errors import InputError
from certkit.schemas import document
from certkit.validation import VALIDATOR_NAMES

__all__ = ["COMMANDS", "JSON_SCHEMA_VERSION"]

#: The version of the ``--json`` document (certkit/schemas/probe.schema.json); bumped only on breaking changes.
JSON_SCHEMA_VERSION = document("probe").version


def _identity(cert: str | None, key: str | None) -> ClientIdentity | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise InputError("--client-cert and --client-key go together.", "Give both, or neither.")
    return load_identity(cert, key, passphrase=key_passphrase(), what="client certificate")


def _identity_from_home(home: str | None, name: str) -> ClientIdentity:
    """``--as NAME``: the CA's identity for NAME (:meth:`~certkit.ca.CertificateAuthority.identity_for`)."""
    from certkit.ca import CertificateAuthority

    with CertificateAuthority.open(resolve_home(home)) as authority:
        return authority.identity_for(name, passphrase=key_passphrase())


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


def _where(a: AddressResult) -> str:
    return f"{a.host} [{a.address}]:{a.port}" if a.host != a.address else f"[{a.address}]:{a.port}"


def _print_ours(ours: OurCertificate) -> None:
    """The run's check of the certificate we present: one line, then its findings with their fixes."""
    head = f"Our certificate {ours.cert.subject.rfc4514_string()} under {ours.validator} rules"
    if ours.domain is not None:
        head += f" for {ours.domain}"
    click.echo(printable(f"{head}: ") + verdict("OK" if ours.ok else plural(len(ours.errors), "error"), ours.ok))
    for f in ours.findings:
        click.echo("  " + severity(str(f.severity)) + printable(f": {f.code}: {f.detail}"))
        click.echo(printable(f"    fix: {ours.remedy(f)}"))


def _print(results: list[ProbeResult], verbose: bool, validator: str = "exchange") -> None:
    # Replies, certificate names and transcripts are the server's text: printable() escapes control
    # characters so that a hostile server cannot recolour, move or overwrite what the admin reads. The
    # colours (severities, verdicts) are ours, added to what is already escaped.
    def out(text: str, *, lead: str = "") -> None:
        click.echo(lead + printable(text))

    if results and results[0].ours is not None:
        _print_ours(results[0].ours)
    for r in results:
        for f in r.findings:
            out(f": {f.code}: {f.detail}", lead=printable(f"{r.target}: ") + severity(str(f.severity)))
        for a in r.addresses:
            out("", lead=printable(f"{_where(a)}: ") + verdict(printable(a.verdict), a.ok))
            tls = a.session.tls if a.session else None
            if tls is not None:
                out(f"  TLS: {tls.version} {tls.cipher}; chain: "
                    + " <- ".join(c.subject.rfc4514_string() for c in tls.peer_chain))
            if a.dane is not None:
                out(f"  DANE: {a.dane.summary}")
            for f in a.findings:
                out(f": {f.code}: {f.detail}", lead="  " + severity(str(f.severity)))
                if validator == "exchange-online" and f.entry.exchange_online_text and f.severity == "error":
                    out(f"    Exchange Online shows: {f.entry.exchange_online_text}")
                elif f.exchange_text and f.severity == "error":
                    out(f"    Exchange shows: {f.exchange_text}")
                out(f"    fix: {f.entry.remedy}")
            if verbose and a.session is not None:
                for line in a.session.transcript:
                    out(f"    {line}")
        if r.mta_sts is not None:
            for text in report_lines(r.mta_sts):
                click.echo(text)


@click.command("probe")
@click.argument("targets", nargs=-1)
@click.option("--port", default=25, show_default=True, help="Port for domains and hosts given without one.")
@click.option("--implicit-tls", is_flag=True, help="TLS from the first byte (port 465 style), no STARTTLS.")
@click.option("--client-cert", type=click.Path(), default=None,
              help="Our certificate (PEM, leaf first, chain after) to present.")
@click.option("--client-key", type=click.Path(), default=None,
              help=f"Its private key (passphrase from ${KEY_PASSPHRASE_ENV}).")
@click.option("--as", "as_name", default=None, metavar="NAME",
              help="Present our certificate for NAME from the CA home (newest valid one; files as recorded).")
@click.option("--store", type=click.Path(file_okay=False), default=None, help="Trust store (default: <home>/trust).")
@click.option("--managed-only", is_flag=True, help="Trust only the managed anchors, not certifi's public roots.")
@click.option("--validator", type=click.Choice(VALIDATOR_NAMES), default="exchange", show_default=True,
              help="Whose rules decide: exchange requires checkable revocation, postfix checks none, "
                   "exchange-online applies an Exchange Online connector's (public CA, certificate domain).")
@click.option("--domain", default=None, help="Domain Security name rule (default: the target domain).")
@click.option("--name", default=None, help="Host-name rule instead: the name the certificate must carry.")
@click.option("--mail-from", default=None, help="MAIL FROM address (default: probe@<our domain>).")
@click.option("--rcpt", default=None, help="RCPT TO address (default: postmaster@<their domain>).")
@click.option("--helo", default=None, help="EHLO name (default: our certificate's name, else localhost).")
@click.option("--nameserver", default=None, help="DNS server as IP[:PORT] (default: the system's).")
@click.option("--dane", type=click.Choice(["auto", "require", "off"]), default="auto", show_default=True,
              help="TLSA checks (RFC 7672): auto applies DANE where the resolver validated TLSA records (AD bit), "
                   "require also fails MX hosts without them, off looks up nothing.")
@sts_options("of each domain target: the policy, every MX against it and the Web PKI")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1, max=3600),
              help="Seconds per step (0.1 to 3600).")
@click.option("--concurrency", default=50, show_default=True, type=click.IntRange(1, 1000),
              help="Sessions at once (1 to 1000).")
@click.option("--from", "from_file", type=click.Path(), default=None, help="Read targets from FILE.")
@click.option("--per-address", default=2, show_default=True, type=click.IntRange(0, 1000),
              help="Sessions at once to one server address (0: no limit).")
@click.option("--per-net", default=8, show_default=True, type=click.IntRange(0, 10000),
              help="Sessions at once to one network, an IPv4 /24 or IPv6 /48 (0: no limit).")
@click.option("--jsonl", "jsonl", type=click.Path(dir_okay=False), default=None,
              help="Bulk: write one JSON line per target to FILE as each is done (docs/bulk.md).")
@click.option("--json-lines", "json_lines", is_flag=True, help="Bulk: the JSON lines on stdout.")
@click.option("--resume", is_flag=True, help="With --jsonl: skip the targets already in FILE, append the rest.")
@click.option("--window", default=1000, show_default=True, type=click.IntRange(1, 1_000_000),
              help="Bulk: targets in flight at once.")
@click.option("--executor", default="local", show_default=True, metavar="local|dask-local[:N]|dask://HOST:PORT",
              help="Bulk: where the sessions run (Dask: pip install 'certkit[distributed]').")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Show the transcript.")
@home_option
def probe_cmd(targets: tuple[str, ...], port: int, implicit_tls: bool, client_cert: str | None,
              client_key: str | None, as_name: str | None, store: str | None, managed_only: bool, validator: str,
              domain: str | None, name: str | None, mail_from: str | None, rcpt: str | None, helo: str | None,
              nameserver: str | None, dane: str, mta_sts: str, sts_cafile: str | None, sts_policy_port: int,
              timeout: float, concurrency: int, from_file: str | None, per_address: int, per_net: int,
              jsonl: str | None, json_lines: bool, resume: bool, window: int, executor: str, as_json: bool,
              verbose: bool, home: str | None) -> None:
    """Talk to TARGET's mail servers as a sending Edge would (never sending DATA), and explain failures.

    TARGET is a mail domain (resolved through MX), host:port or [ip]:port. Exit 0 when no error was
    found, 1 when one was, 2 on misuse, 3 when nothing could be reached.
    """
    if as_name is not None and (client_cert or client_key):
        raise InputError("--as and --client-cert/--client-key are mutually exclusive.", "Use one or the other.")
    bulk = _bulk(targets, from_file, jsonl, json_lines, as_json, verbose, resume, window, executor)
    all_targets = _targets(targets, from_file) if bulk is None else []
    identity = (_identity_from_home(home, as_name) if as_name is not None
                else _identity(client_cert, client_key))
    root = our_ca_root(resolve_home(home), identity.chain, identity.cert) if identity is not None else None
    anchors = open_store(home, store).anchor_set(managed_only=managed_only)
    # --from shares sessions too: the domains of a list often share their hoster's MX hosts.
    options = ProbeOptions(port=port, implicit_tls=implicit_tls, validator=validator,  # type: ignore[arg-type]
                           domain=domain, name=name, mail_from=mail_from, rcpt_to=rcpt, helo_name=helo,
                           nameserver=nameserver, timeout=timeout, concurrency=concurrency, dane=dane,
                           mta_sts=mta_sts, sts_cadata=read_cafile(sts_cafile), sts_policy_port=sts_policy_port,
                           per_address=per_address or None, per_net=per_net or None,
                           share_sessions=bulk is not None or from_file is not None)
    if bulk is not None:
        sys.exit(bulk.run({"anchors": anchors, "identity": identity, "our_roots": [root] if root else []}, options))
    progress = AddressBar(pending=len(all_targets)) if worth_a_bar(len(all_targets)) else None
    try:
        results = probe_sync(all_targets, anchors=anchors, identity=identity, options=options, progress=progress,
                             our_roots=[root] if root is not None else [])
    finally:
        if progress is not None:
            progress.close()
    code = exit_code(results)
    if as_json:
        ours = results[0].ours if results else None
        echo_json({"schema_version": JSON_SCHEMA_VERSION, "validator": validator,
                   "our_certificate": None if ours is None else ours.to_dict(),
                   "results": [r.to_dict() for r in results], "exit_code": code})
    else:
        _print(results, verbose, validator)
    sys.exit(code)


def _bulk(targets: tuple[str, ...], from_file: str | None, jsonl: str | None, json_lines: bool, as_json: bool,
          verbose: bool, resume: bool, window: int, executor: str) -> BulkRun | None:
    """The bulk run that --jsonl or --json-lines asks for (``None``: an ordinary report)."""
    if jsonl is None and not json_lines:
        if resume or executor != "local":
            raise InputError("--resume and --executor go with --jsonl FILE (or --json-lines).",
                             "Add --jsonl results.jsonl.")
        return None
    if jsonl is not None and json_lines:
        raise InputError("--jsonl and --json-lines are mutually exclusive.", "Write to a file or to stdout.")
    if as_json or verbose:
        raise InputError("--json and -v do not go with JSON lines.", "Each line already holds the whole result.")
    return BulkRun(targets, from_file, jsonl, resume, window, executor)


COMMANDS: list[click.Command] = [probe_cmd]
