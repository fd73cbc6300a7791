"""``certkit audit``: will the certificate this server presents as an SMTP client keep clientAuth?

Exit codes: 0 nothing breaks within --within, 1 a certificate already lacks clientAuth, has expired, or
comes from a public CA dropping clientAuth and expires within --within, 2 usage or input error (one line).
"""

from __future__ import annotations

import datetime as dt
import re
import sys

import click
from cryptography import x509

from certkit.adapters.inputs import read_input
from certkit.cli.colour import paint_report
from certkit.cli.common import PFX_PASSWORD_ENV, echo_json, parse_at, read_secret
from certkit.clock import SystemClock
from certkit.core.clientauth import (
    AuditedCertificate,
    AuditReport,
    ClientCertificate,
    Source,
    audit_client_certificates,
)
from certkit.core.findings import CATALOGUE
from certkit.core.formats import load_certificates
from certkit.core.text import plural, printable
from certkit.errors import InputError, PassphraseError, UsageError

__all__ = ["audit_cmd"]


#: --within units: days, hours, weeks (as ``certkit ca list --expiring`` reads them).
_UNITS = {"d": dt.timedelta(days=1), "h": dt.timedelta(hours=1), "w": dt.timedelta(weeks=1)}


def _parse_within(text: str) -> dt.timedelta:
    m = re.fullmatch(r"\s*(\d{1,6})\s*([dhw]?)\s*", text)
    if not m:
        raise InputError(f"--within {text!r} is not a period.", "Write e.g. 90d, 12h or 2w.")
    return int(m.group(1)) * _UNITS[m.group(2) or "d"]


def _load(path: str, password_file: str | None) -> list[x509.Certificate]:
    """The certificates of a PEM/DER/PKCS#7 file or a PFX (its password asked for only when it needs one)."""
    data = read_input(path, what="certificate")
    try:
        return load_certificates(data, source=path)
    except PassphraseError:
        secret = read_secret(env=PFX_PASSWORD_ENV, file=password_file, prompt=f"Password for {path}",
                             what="PFX password", option="--pfx-password-file")
        return load_certificates(data, source=path, password=secret)


def _item(path: str, source: Source, password_file: str | None) -> ClientCertificate:
    certs = _load(path, password_file)
    return ClientCertificate(certs[0], tuple(certs[1:]), source)


def _postfix_items(folder: str, password_file: str | None) -> tuple[list[ClientCertificate], tuple[str, ...]]:
    from certkit.adapters.postfixconf import postfix_client_certificates

    found = postfix_client_certificates(folder)
    items = [_item(str(s.file), Source(str(s.file), s.parameter, s.service), password_file) for s in found.settings]
    return items, found.notes


def _render_one(c: AuditedCertificate) -> list[str]:
    label = {"breaks": "BREAKS", "warning": "WARN", "ok": "OK"}[c.status]
    eku = ", ".join(c.eku) if c.eku is not None else "none (any usage)"
    lines = [f"{label:<7}{c.cert.subject.rfc4514_string()}  [{c.source.describe()}]",
             f"       issuer {c.cert.issuer.rfc4514_string()}; EKU {eku}; "
             f"expires {c.cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"]
    if c.public_issuer is not None:
        for m in c.public_issuer.milestones:
            lines.append(f"       {c.public_issuer.name}: {m.date} {m.event} ({m.status}) {m.source}")
    for f in c.findings:
        lines.append(f"       {f.code}: {f.detail}")
        lines.append(f"       fix: {CATALOGUE[f.code].remedy}")
    return lines


def render_text(report: AuditReport) -> list[str]:
    """The report as lines for a person."""
    days = report.within.total_seconds() / 86400
    lines = [f"clientAuth audit at {report.at:%Y-%m-%dT%H:%M:%SZ}, looking {days:g} days ahead "
             f"(to {report.deadline:%Y-%m-%dT%H:%M:%SZ})", ""]
    for c in report.certificates:
        lines += [*_render_one(c), ""]
    lines += [f"note: {n}" for n in report.notes]
    counts = {s: sum(c.status == s for c in report.certificates) for s in ("breaks", "warning", "ok")}
    lines.append(f"{plural(counts['breaks'], 'break')}, {plural(counts['warning'], 'warning')}, {counts['ok']} fine.")
    return lines


@click.command("audit")
@click.argument("files", nargs=-1, type=click.Path())
@click.option("--postfix-config", "postfix_dir", type=click.Path(), default=None,
              help="Postfix's configuration folder: read main.cf (and master.cf -o overrides) for the client "
                   "certificate (smtp_tls_chain_files, smtp_tls_cert_file, ...).")
@click.option("--within", "within_text", default="90d", show_default=True,
              help="Exit 1 when a certificate breaks within PERIOD (90d, 12h, 2w).")
@click.option("--at", "at_text", default=None, help="Judge at this time (ISO 8601) instead of now.")
@click.option("--pfx-password-file", type=click.Path(), default=None,
              help=f"A PFX's password (first line); else ${PFX_PASSWORD_ENV} or a prompt.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (see certkit/schemas/audit.schema.json).")
def audit_cmd(files: tuple[str, ...], postfix_dir: str | None, within_text: str, at_text: str | None,
              pfx_password_file: str | None, as_json: bool) -> None:
    """Audit the certificates this server presents as a TLS client (FILE: PEM, DER or PFX; or --postfix-config).

    Public CAs are dropping the clientAuth EKU; a partner that checks it refuses a client certificate without
    it. Exit 0 fine, 1 something lacks clientAuth or breaks within --within, 2 usage or input error.
    """
    if not files and not postfix_dir:
        raise UsageError("Nothing to audit.", "Give certificate files, or --postfix-config DIR (e.g. /etc/postfix).")
    within = _parse_within(within_text)
    at = parse_at(at_text) if at_text else SystemClock().now()
    items = [_item(f, Source(f), pfx_password_file) for f in files]
    notes: tuple[str, ...] = ()
    if postfix_dir:
        more, notes = _postfix_items(postfix_dir, pfx_password_file)
        items += more
    report = audit_client_certificates(items, at=at, within=within, notes=notes)
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(paint_report("\n".join(printable(line) for line in render_text(report))))
    sys.exit(report.exit_code)
