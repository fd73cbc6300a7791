"""``certkit preflight``: before switching on Domain Security with a partner, will it work both ways?

Exit codes: 0 ready, 1 not ready, 2 usage (including a --report/--tlsrpt file that cannot be written),
3 nothing reachable (no address of the partner answered, or DNS gave none: the probe's rule). Only the
report goes to stdout; progress goes to stderr, and only when stderr is a terminal.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from certkit.adapters.fs import atomic_write
from certkit.adapters.inputs import read_input
from certkit.checks.mtasts import read_cafile
from certkit.checks.preflight import MIN_TIMEOUT, PreflightOptions, preflight, render_html, render_text
from certkit.cli.cmdline import invoked_command_line
from certkit.cli.colour import paint_report
from certkit.cli.common import (
    KEY_PASSPHRASE_ENV,
    echo_json,
    home_option,
    key_passphrase,
    open_store,
    our_ca_root,
    parse_at,
    resolve_home,
    stderr_is_terminal,
    sts_options,
)
from certkit.cli.progress import AddressBar
from certkit.clock import SystemClock
from certkit.configgen import DEFAULT_EXCHANGE_TARGET, EXCHANGE_TARGETS
from certkit.core.formats import load_certificates
from certkit.core.keys import load_private_key
from certkit.core.text import printable
from certkit.errors import CertkitError, UsageError

__all__ = ["COMMANDS"]


def _check_output(path: str, option: str) -> None:
    """Refuse, before any network step, an output path that cannot become a file."""
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{option} {path} is a folder.", "Give a file name.")
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: {folder} is not a folder.", "Give a path in an existing folder.")


def _write(path: str, data: bytes, option: str) -> None:
    """Write an output file; a failure is one line and exit 2 (exit 1 means "not ready")."""
    try:
        atomic_write(path, data, overwrite=True)
    except CertkitError as err:
        raise UsageError(f"Cannot write the {option} file {path}: {err}") from None


class _Steps:
    """The pre-flight's progress on stderr (a terminal): one line per step, then the addresses of their MX
    hosts as the CLI's progress bar when there is more than one."""

    def __init__(self) -> None:
        self._bar: AddressBar | None = None

    def __call__(self, step: str, text: str) -> None:
        if step != "address":
            click.echo(f"{step}: {printable(text)}", err=True)  # names and replies from the partner's DNS
            return
        # "[n/total] host [address]:port: verdict" (certkit.checks.preflight)
        counts, _, last = text.partition("] ")
        total = int(counts.strip("[").partition("/")[2] or 0)
        if total < 2:
            return
        if self._bar is None:
            self._bar = AddressBar(total=total)
        self._bar(last=last)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@click.command("preflight")
@click.option("--partner", required=True, help="The partner's mail domain (fabrikam.com).")
@click.option("--our-domain", required=True, help="Our mail domain (contoso.com).")
@click.option("--cert", "cert_file", required=True, type=click.Path(),
              help="Our transport certificate (PEM/DER; leaf first, chain after).")
@click.option("--key", "key_file", required=True, type=click.Path(),
              help=f"Its private key (passphrase from ${KEY_PASSPHRASE_ENV}).")
@click.option("--chain", "chain_file", type=click.Path(), default=None,
              help="Intermediates (and our root) we send with it (default root: the CA in --home, if any).")
@click.option("--store", type=click.Path(file_okay=False), default=None, help="Trust store (default: <home>/trust).")
@click.option("--managed-only", is_flag=True, help="Trust only the managed anchors, not certifi's public roots.")
@click.option("--edge-fqdn", default=None, help="Our Edge's public FQDN (default: our certificate's CN).")
@click.option("--accepted-domain", "accepted", multiple=True, help="Another accepted domain our SAN must name.")
@click.option("--smart-host", default=None, help="The smart host our Send connector uses today, if any.")
@click.option("--nameserver", default=None, help="DNS server as IP[:PORT] (default: the system's).")
@click.option("--port", default=25, show_default=True, type=click.IntRange(1, 65535), help="SMTP port of their MX.")
@click.option("--mx", "mx", multiple=True, metavar="HOST[:PORT]",
              help="Probe this host instead of the partner's MX records (repeatable; a staging or lab MX): "
                   "no MX lookup, a host name is resolved to its addresses, the port defaults to --port.")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(min=MIN_TIMEOUT, max=3600),
              help="Seconds per network step.")
@click.option("--at", "at_text", default=None, help="Judge at this time (ISO 8601) instead of now.")
@click.option("--target", type=click.Choice(EXCHANGE_TARGETS), default=DEFAULT_EXCHANGE_TARGET, show_default=True,
              help="The partner's Exchange: 2010 adds its rule (RSA keys only); 2016 is 2013 to Subscription "
                   "Edition; online is Exchange Online.")
@click.option("--validator", type=click.Choice(["exchange", "postfix"]), default="exchange", show_default=True,
              help="Whose rules decide: exchange requires checkable revocation, postfix checks none.")
@click.option("--dane", type=click.Choice(["auto", "require", "off"]), default="auto", show_default=True,
              help="DANE (RFC 7672) for their MX: auto uses DNSSEC-secure TLSA records, require also fails MX "
                   "hosts without them, off looks up nothing.")
@sts_options("of the partner domain, from the endpoints' sessions; reported, not part of the verdict")
@click.option("--report", "report_file", type=click.Path(dir_okay=False), default=None,
              help="Also write the report as one self-contained HTML file.")
@click.option("--tlsrpt", "tlsrpt_file", type=click.Path(dir_okay=False), default=None,
              help="Also write an RFC 8460 TLS-RPT aggregate report (JSON).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the report as JSON (see certkit/schemas/preflight.schema.json).")
@home_option
def preflight_cmd(partner: str, our_domain: str, cert_file: str, key_file: str, chain_file: str | None,
                  store: str | None, managed_only: bool, edge_fqdn: str | None, accepted: tuple[str, ...],
                  smart_host: str | None, nameserver: str | None, port: int, mx: tuple[str, ...], timeout: float,
                  at_text: str | None,
                  target: str, validator: str, dane: str, mta_sts: str, sts_cafile: str | None,
                  sts_policy_port: int, report_file: str | None, tlsrpt_file: str | None, as_json: bool,
                  home: str | None) -> None:
    """Check, before switching on Domain Security with PARTNER, that both directions will work.

    Our certificate as their Edge sees it, routing to their MX, and every MX address probed with our
    certificate (with --dane auto or require, also against their TLSA records). Exit 0 ready, 1 not ready,
    2 misuse, 3 nothing reachable (no address of the partner answered, or DNS found none).
    """
    for out_file, option in ((report_file, "--report"), (tlsrpt_file, "--tlsrpt")):
        if out_file:
            _check_output(out_file, option)
    certs = load_certificates(read_input(cert_file, what="certificate"), source=cert_file)
    chain = list(certs[1:])
    if chain_file:
        chain += load_certificates(read_input(chain_file, what="chain"), source=chain_file)
    # <fqdn>.chain.pem repeats the leaf: keep each certificate once, the leaf only in front.
    chain = [c for i, c in enumerate(chain) if c != certs[0] and c not in chain[:i]]
    root = our_ca_root(resolve_home(home), chain, certs[0])
    if root is not None:
        chain.append(root)
    key = load_private_key(read_input(key_file, what="key"), key_passphrase(), source=key_file)
    anchors = open_store(home, store).anchor_set(managed_only=managed_only)
    at = parse_at(at_text) if at_text else None
    options = PreflightOptions(edge_fqdn=edge_fqdn, accepted_domains=accepted, smart_host=smart_host,
                               nameserver=nameserver, port=port, timeout=timeout, exchange2010=target == "2010",
                               validator="postfix" if validator == "postfix" else "exchange", dane=dane,
                               mta_sts=mta_sts, sts_cadata=read_cafile(sts_cafile), sts_policy_port=sts_policy_port,
                               mx=mx)
    steps = _Steps() if stderr_is_terminal() else None
    try:
        report = preflight(partner, our_domain=our_domain, cert=certs[0], key=key, chain=chain, anchors=anchors,
                           at=at, progress=steps, options=options)
    finally:
        if steps is not None:
            steps.close()
    if report_file:
        page = render_html(report, command=invoked_command_line(), generated=SystemClock().now())
        _write(report_file, page.encode("utf-8"), "--report")
    if tlsrpt_file:
        from certkit.tlsrpt import tlsrpt_report

        data = json.dumps(tlsrpt_report(report), indent=2) + "\n"
        _write(tlsrpt_file, data.encode("utf-8"), "--tlsrpt")
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(paint_report(render_text(report)), nl=False)
    sys.exit(report.exit_code)


COMMANDS: list[click.Command] = [preflight_cmd]
