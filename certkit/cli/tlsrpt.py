"""``certkit tlsrpt``: read the TLS-RPT reports partners send (``read``), and receive them over HTTPS (``serve``).

``read`` exit codes: 0 the reports show no failed session, 1 they show failures, 2 usage, or no file held a
readable report. ``serve`` runs until interrupted (130).
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import click

from certkit.cli.common import (
    HOME_ENV,
    CertkitGroup,
    echo_json,
    home_option,
    key_passphrase,
    parse_at,
    resolve_home,
    say,
)
from certkit.clock import SystemClock
from certkit.core.jsonfacts import rfc3339
from certkit.core.text import plural
from certkit.core.tlsrpt_read import Analysis, Cause, KnownCertificate, analyse
from certkit.errors import CertkitError, InputError, UsageError

__all__ = ["tlsrpt"]


@click.group("tlsrpt", cls=CertkitGroup)
def tlsrpt() -> None:
    """SMTP TLS Reporting (RFC 8460): read the reports partners send, or receive them over HTTPS."""


def _known_certificates(home: str | None) -> list[KnownCertificate]:
    """The certificates our CA issued: from --home or $CERTKIT_HOME (which must be a CA), else ./ca if it is one."""
    from certkit.ca import CertificateAuthority

    path = resolve_home(home)
    if not (home or os.environ.get(HOME_ENV)) and not (path / CertificateAuthority.INDEX).is_file():
        return []
    with CertificateAuthority.open(path) as ca:
        return [KnownCertificate(r.certificate, r.status, r.revoked_at) for r in ca.records()]


def _cause_lines(c: Cause) -> list[str]:
    where = c.mx_host or (f"mta-sts.{c.policy_domain}" if c.result_type.startswith("sts-") and c.policy_domain
                          else "(no MX host named)")
    days = "" if c.first_day is None else f", {c.first_day}" + ("" if c.last_day == c.first_day else f"..{c.last_day}")
    policy = f"{c.policy_type}" + (f" {c.policy_domain}" if c.policy_domain else "")
    lines = [f"FAIL {c.result_type} at {where} ({policy}): {plural(c.sessions, 'session')} reported by "
             f"{', '.join(c.organizations)}{days}"]
    if c.receiving_ips:
        shown = ", ".join(c.receiving_ips[:4]) + (f" and {len(c.receiving_ips) - 4} more" if len(c.receiving_ips) > 4
                                                  else "")
        lines.append(f"     addresses: {shown}")
    if c.failure_reason_code:
        lines.append(f"     reason: {c.failure_reason_code}")
    if c.code:
        lines.append(f"     finding: {c.code} ({c.title})")
    elif c.codes:
        lines.append(f"     findings with this type: {', '.join(c.codes)}")
    if c.certificate is not None:
        cert = c.certificate.to_dict()
        lines.append(f"     our certificate: serial {cert['serial']}, thumbprint {cert['thumbprint_sha1']}, "
                     f"valid {cert['not_before']} to {cert['not_after']} ({c.certificate.why})")
    lines.append(f"     fix: {c.remedy}")
    return lines


def render_text(a: Analysis, *, notes_shown: int = 10) -> list[str]:
    """The analysis as lines for a person."""
    orgs = sorted({r.organization for r in a.reports})
    days = sorted({r.day for r in a.reports if r.day is not None})
    span = f" ({days[0]}..{days[-1]})" if days else ""
    lines = [f"TLS-RPT: {plural(len(a.reports), 'report')} from {plural(len(orgs), 'organisation')}{span}"
             + (f"; {plural(len(a.failures), 'file')} unreadable" if a.failures else ""),
             f"sessions: {a.successful} successful, {a.failed} failed", ""]
    if a.rows:
        lines.append(f"{'day':<11} {'organisation':<26} {'policy':<34} {'ok':>9} {'failed':>7}  result types")
        for row in a.rows:
            policy = row.policy_type + (f" {row.policy_domain}" if row.policy_domain else "")
            types = ", ".join(f"{k} {v}" for k, v in row.result_types.items())
            lines.append(f"{row.day or '-'!s:<11} {row.organization[:26]:<26} {policy[:34]:<34} {row.successful:>9} "
                         f"{row.failed:>7}  {types}")
        lines.append("")
    if a.causes:
        lines.append("Causes, most failed sessions first:")
        for c in a.causes:
            lines += _cause_lines(c)
        lines.append("")
    elif a.reports:
        lines += ["No failed sessions reported.", ""]
    for f in a.failures:
        lines.append(f"unreadable: {f.error}")
    for d in a.duplicates:
        lines.append(f"duplicate (counted once): {d}")
    noted = [r for r in a.reports if r.notes]
    for r in noted[:notes_shown]:
        lines.append(f"tolerated in {r.source}: {'; '.join(r.notes)}")
    if len(noted) > notes_shown:
        lines.append(f"tolerated in {plural(len(noted) - notes_shown, 'more report')} (--json lists every note)")
    return lines


def _document(a: Analysis) -> dict[str, object]:
    from certkit.schemas import stamped

    return stamped("tlsrpt read", a.to_dict())


@tlsrpt.command("read")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON (see certkit/schemas/tlsrpt-read.schema.json).")
@click.option("--html", "html_file", type=click.Path(dir_okay=False), default=None,
              help="Also write a self-contained HTML page an admin can forward.")
@click.option("--at", "at_text", default=None, help="Judge our certificates at this time (ISO 8601) instead of now.")
@click.option("--max-decompressed", "max_decompressed", default="64MiB", show_default=True,
              help="Refuse a report that decompresses to more than this.")
@home_option
def read_cmd(paths: tuple[str, ...], as_json: bool, html_file: str | None, at_text: str | None,
             max_decompressed: str, home: str | None) -> None:
    """Read TLS-RPT reports (PATH: .json, .json.gz, .eml, or folders of them) and say what caused the failures.

    Each failure is tied, where it can be, to certkit's finding code, to our certificate for the MX host (when
    the CA in --home issued one) and to the remedy. Exit 0 no failed sessions, 1 failures reported, 2 usage or
    nothing readable.
    """
    import sys

    from certkit.adapters.tlsrpt_files import read_reports

    at = parse_at(at_text) if at_text else SystemClock().now()
    reports, failures = read_reports(paths, limit=parse_size(max_decompressed, "--max-decompressed"))
    analysis = analyse(reports, at=at, failures=failures, certificates=_known_certificates(home))
    if html_file:
        from certkit.adapters.fs import atomic_write
        from certkit.adapters.render import render

        page = render("tlsrpt.html.j2", a=_document(analysis), generated=rfc3339(at))
        try:
            atomic_write(html_file, page.encode("utf-8"), overwrite=True)
        except CertkitError as err:
            raise UsageError(f"Cannot write the --html file {html_file}: {err}") from None
    if as_json:
        echo_json(_document(analysis))
    else:
        for line in render_text(analysis):
            say(line)
    sys.exit(analysis.exit_code)


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1000**3, "gb": 1000**3, "gib": 1024**3}


def parse_size(text: str, option: str) -> int:
    """A size: ``1048576``, ``512KiB``, ``1MiB``, ``20MB``."""
    m = re.fullmatch(r"\s*(\d{1,12})\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS or int(m.group(1)) == 0:
        raise InputError(f"{option} {text!r} is not a size.", "Write e.g. 1MiB, 512KiB or 1048576.")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def _parse_rate(text: str) -> int:
    m = re.fullmatch(r"\s*(\d{1,6})\s*(?:/\s*(min|m|minute|h|hour))?\s*", text)
    if not m or int(m.group(1)) == 0:
        raise InputError(f"--rate {text!r} is not a rate.", "Write e.g. 60/min or 600/hour.")
    n = int(m.group(1))
    return max(1, n // 60) if m.group(2) in ("h", "hour") else n


def _parse_listen(text: str) -> tuple[str, int]:
    m = re.fullmatch(r"\[?([0-9A-Za-z.:-]*?)\]?:(\d{1,5})", text.strip())
    if not m or not 0 < int(m.group(2)) < 65536:
        raise InputError(f"--listen {text!r} is not ADDRESS:PORT.", "Write e.g. 0.0.0.0:8443, [::]:443 or :8443.")
    return m.group(1) or "0.0.0.0", int(m.group(2))


@tlsrpt.command("serve")
@click.option("--listen", "listen", required=True, help="ADDRESS:PORT to listen on (e.g. 0.0.0.0:443).")
@click.option("--cert", "cert_file", required=True, type=click.Path(dir_okay=False),
              help="Our certificate for the rua host name, with its chain (PEM).")
@click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False),
              help=f"Its key (PEM; encrypted: ${'CERTKIT_KEY_PASSPHRASE'}).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder the reports are stored in (certkit tlsrpt read reads it).")
@click.option("--max-body", default="1MiB", show_default=True, help="Largest request body accepted.")
@click.option("--max-decompressed", default="20MiB", show_default=True, help="Largest report after gunzip.")
@click.option("--rate", default="60/min", show_default=True, help="Reports accepted per address.")
@click.option("--max-per-ip", type=click.IntRange(1, 1000), default=4, show_default=True,
              help="Connections at once from one address.")
@click.option("--header-timeout", type=click.FloatRange(0.1, 600), default=10.0, show_default=True,
              help="Seconds for the TLS handshake and the request head.")
@click.option("--body-timeout", type=click.FloatRange(0.1, 3600), default=60.0, show_default=True,
              help="Seconds for the request body.")
def serve_cmd(listen: str, cert_file: str, key_file: str, out_dir: str, max_body: str, max_decompressed: str,
              rate: str, max_per_ip: int, header_timeout: float, body_timeout: float) -> None:
    """Receive TLS-RPT reports by HTTPS POST (RFC 8460 §5.4) into --out, for an https:// rua.

    Accepts application/tlsrpt+json and application/tlsrpt+gzip at /, /tlsrpt and /.well-known/tlsrpt; stores
    each report under a name it chooses; logs one line per request. Runs until interrupted.
    """
    from certkit.adapters.tlsrpt_server import Event, ReportServer, ServeOptions, tls_context

    host, port = _parse_listen(listen)
    options = ServeOptions(Path(out_dir), max_body=parse_size(max_body, "--max-body"),
                           max_decompressed=parse_size(max_decompressed, "--max-decompressed"),
                           rate_per_minute=_parse_rate(rate), max_connections_per_ip=max_per_ip,
                           header_timeout=header_timeout, body_timeout=body_timeout)
    context = tls_context(cert_file, key_file, key_passphrase())

    def log(e: Event) -> None:
        stored = f" -> {e.file.name}" if e.file else ""
        who = f" ({e.organization}, report {e.report_id})" if e.organization else ""
        say(f"{rfc3339(e.at)} {e.peer} {e.status} {e.reason}{stored}{who}")

    server = ReportServer(options, context, host=host, port=port, on_event=log)

    async def run() -> None:
        await server.start()
        say(f"certkit tlsrpt serve: listening on https://{host}:{server.port}/ (reports into {out_dir})", err=True)
        await server.serve_forever()

    try:
        asyncio.run(run())
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise UsageError(f"Cannot listen on {listen}: {exc.strerror or exc}.",
                         "Choose a free port (below 1024 needs privileges).") from None
