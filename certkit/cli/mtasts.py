"""``certkit mta-sts check DOMAIN``: the MTA-STS verdict and the TLS-RPT record of a mail domain.

Exit codes: 0 no error finding (whatever the verdict), 1 an error finding (under ``enforce``, an MX that
MTA-STS senders will not deliver to), 2 usage.
"""

from __future__ import annotations

import sys

import click

from certkit.checks.mtasts import check_mta_sts, read_cafile
from certkit.cli.common import CertkitGroup, echo_json
from certkit.core.mtasts import StsReport
from certkit.core.text import printable
from certkit.schemas import stamped

__all__ = ["mta_sts", "report_lines"]


def report_lines(report: StsReport, indent: str = "") -> list[str]:
    """The report as text lines for people (the probe and the pre-flight print them too)."""
    lines = [f"{indent}MTA-STS {report.domain}: {report.verdict} -- {report.summary}"]
    if report.record is not None:
        lines.append(f"{indent}  record: {report.record.text}")
    if report.policy is not None:
        p = report.policy
        lines.append(f"{indent}  policy: mode {p.mode}, max_age {p.max_age}, mx {', '.join(p.mx) or '(none)'}")
    for m in report.mx:
        state = "listed" if m.pattern is not None else "NOT listed"
        dane = f", DANE {m.dane}" if m.dane else ""
        lines.append(f"{indent}  mx {m.host}: {state}, Web PKI {m.webpki}{dane}")
    rua = ", ".join(report.tlsrpt.rua) if report.tlsrpt is not None else "none"
    lines.append(f"{indent}TLS-RPT {report.domain}: {rua}")
    for f in report.findings:
        lines.append(f"{indent}  {f.severity}: {f.code}: {f.detail}")
        if f.severity != "info":
            lines.append(f"{indent}    fix: {f.entry.remedy}")
    return [printable(line) for line in lines]


@click.group("mta-sts", cls=CertkitGroup)
def mta_sts() -> None:
    """MTA-STS (RFC 8461) and TLS-RPT (RFC 8460) of a mail domain."""


@mta_sts.command("check")
@click.argument("domain")
@click.option("--nameserver", default=None, help="DNS server as IP[:PORT] (default: the system's).")
@click.option("--cafile", type=click.Path(dir_okay=False), default=None,
              help="PEM roots to use instead of the Web PKI (Mozilla's roots), for the policy host and the MX "
                   "hosts: for a lab.")
@click.option("--port", default=25, show_default=True, type=click.IntRange(1, 65535), help="SMTP port of the MX hosts.")
@click.option("--policy-port", default=443, show_default=True, type=click.IntRange(1, 65535),
              help="HTTPS port of the policy host (443; another for a lab).")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1, max=3600),
              help="Seconds per DNS lookup, for the policy fetch in all, and per SMTP step.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def check(domain: str, nameserver: str | None, cafile: str | None, port: int, policy_port: int, timeout: float,
          as_json: bool) -> None:
    """The MTA-STS verdict for DOMAIN (none, testing with what would fail, enforce with what fails) and its
    TLS-RPT record: the _mta-sts TXT record, the policy over HTTPS, every MX against the policy and the Web PKI."""
    report = check_mta_sts(domain, nameserver=nameserver, timeout=timeout, cadata=read_cafile(cafile), port=port,
                           policy_port=policy_port)
    code = 0 if report.ok else 1
    if as_json:
        echo_json(stamped("mta-sts check", {**report.to_dict(), "exit_code": code}))
    else:
        for line in report_lines(report):
            click.echo(line)
    sys.exit(code)
