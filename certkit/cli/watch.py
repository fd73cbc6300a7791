"""``certkit watch``: the inventory, checks on a schedule, metrics for Prometheus, a Nagios plugin, a daily summary.

The library does the work (:mod:`certkit.checks.watch`, :mod:`certkit.adapters.metrics`); this module maps
options and prints. Exit codes: ``run --once`` 0 when all is well, 1 when something is expired, lapsed, failing or
changed; ``check`` uses the Nagios plugin codes (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, also for misuse).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import click

from certkit.cli.common import (
    CertkitGroup,
    echo_json,
    home_option,
    key_passphrase,
    open_store,
    resolve_home,
    say,
)
from certkit.errors import CertkitError, InputError, UsageError
from certkit.schemas import stamped
from certkit.validation import VALIDATOR_NAMES

__all__ = ["watch"]

F = TypeVar("F", bound=Callable[..., Any])

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _period(text: str, option: str, *, bare: str) -> dt.timedelta:
    """``15m``, ``12h``, ``30d``, ``2w``; a bare number is in ``bare`` units (days for thresholds)."""
    m = re.fullmatch(r"\s*(\d{1,7}(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if not m:
        raise InputError(f"{option} {text!r} is not a period.", "Write e.g. 15m, 12h, 30d or 2w.")
    return dt.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2) or bare])


def _probe_options(f: F) -> F:
    """The probe's options a target is watched with (as ``certkit probe`` takes them)."""
    for option in reversed([
        click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (default 25)."),
        click.option("--implicit-tls", is_flag=True, default=None, help="TLS from the first byte (port 465 style)."),
        click.option("--validator", type=click.Choice(VALIDATOR_NAMES), default=None,
                     help="Whose rules decide (default exchange)."),
        click.option("--domain", default=None, help="Domain Security name rule (default: the target domain)."),
        click.option("--name", default=None, help="Host-name rule instead: the name the certificate must carry."),
        click.option("--mail-from", default=None, help="MAIL FROM address."),
        click.option("--rcpt", default=None, help="RCPT TO address."),
        click.option("--helo", default=None, help="EHLO name."),
        click.option("--nameserver", default=None, help="DNS server as IP[:PORT]."),
        click.option("--dane", type=click.Choice(["auto", "require", "off"]), default=None,
                     help="TLSA checks (default auto, as certkit probe)."),
        click.option("--mta-sts", "mta_sts", type=click.Choice(["auto", "off"]), default=None,
                     help="MTA-STS of a domain target (default auto)."),
        click.option("--timeout", type=click.FloatRange(min=0.1, max=3600), default=None,
                     help="Seconds per step (default 10)."),
        click.option("--as", "as_name", default=None, metavar="NAME",
                     help="Present our certificate for NAME from the CA home (tests Domain Security both ways)."),
    ]):
        f = option(f)
    return f


def _target(text: str, role: str, source: str, kwargs: dict[str, Any]) -> Any:
    from certkit.core.watch import WatchTarget

    renames = {"rcpt": "rcpt_to", "helo": "helo_name"}
    options = {renames.get(k, k): v for k, v in kwargs.items() if v is not None}
    options.setdefault("dane", "auto")
    options.setdefault("mta_sts", "auto")
    return WatchTarget(text.strip(), role, source, options)


def _store_option(f: F) -> F:
    f = click.option("--managed-only", is_flag=True, help="Trust only the managed anchors, not certifi's roots.")(f)
    return click.option("--store", type=click.Path(file_okay=False), default=None,
                        help="Trust store (default: <home>/trust).")(f)


def _history(home: str | None) -> Any:
    from certkit.adapters.watchdb import WatchHistory

    return WatchHistory.open(resolve_home(home))


@click.group("watch", cls=CertkitGroup)
def watch() -> None:
    """Watch certificates, CRLs and partners on a schedule: Prometheus metrics, a Nagios plugin, a summary."""


@watch.command("add")
@click.argument("target")
@click.option("--role", type=click.Choice(["partner", "ours"]), default="partner", show_default=True,
              help="A partner's endpoint or domain, or one of our own endpoints.")
@_probe_options
@home_option
def add_cmd(target: str, role: str, home: str | None, **options: Any) -> None:
    """Watch TARGET (a partner domain, host:port or [ip]:port) with the probe's options."""
    from certkit.checks.watch import add_target
    from certkit.clock import SystemClock

    with _history(home) as history:
        new = add_target(history, _target(target, role, "added", options), SystemClock())
    say(f"{'Watching' if new else 'Updated'} {target} ({role}).")


@watch.command("remove")
@click.argument("target")
@click.option("--store", type=click.Path(file_okay=False), default=None, help="Trust store (default: <home>/trust).")
@home_option
def remove_cmd(target: str, store: str | None, home: str | None) -> None:
    """Stop watching TARGET (a partner of the trust store stays out until added again)."""
    from certkit.checks.watch import remove_target
    from certkit.clock import SystemClock

    with _history(home) as history:
        remove_target(history, target.strip(), SystemClock(), open_store(home, store))
    say(f"No longer watching {target}.")


@watch.command("list")
@click.option("--store", type=click.Path(file_okay=False), default=None, help="Trust store (default: <home>/trust).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@home_option
def list_cmd(store: str | None, as_json: bool, home: str | None) -> None:
    """The watched targets (added, and the trust store's partners); our CA's certificates are always watched."""
    from certkit.checks.watch import inventory

    with _history(home) as history:
        targets = inventory(history, open_store(home, store))
    if as_json:
        echo_json(stamped("watch list", {"targets": [t.to_dict() for t in targets]}))
        return
    if not targets:
        say("No targets: add one with certkit watch add TARGET, or partners with certkit trust add --partner.")
    for t in targets:
        opts = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in t.options.items())
        say(f"{t.target}  {t.role}  {t.source}  {opts}".rstrip())


def _watcher(home: str | None, store: str | None, managed_only: bool, warning: str, **kwargs: Any) -> Any:
    from certkit.checks.watch import Watcher
    from certkit.clock import SystemClock

    trust = open_store(home, store)
    return Watcher(resolve_home(home), clock=SystemClock(), store=trust, anchors=trust.anchor_set(
        managed_only=managed_only), key_passphrase=key_passphrase(),
        warn_days=_period(warning, "--warning", bare="d").total_seconds() / 86400, **kwargs)


def _write_textfile(path: str | None, report: Any) -> None:
    if path is None:
        return
    from certkit.adapters.fs import atomic_write
    from certkit.adapters.metrics import textfile

    if not path.endswith(".prom"):
        raise UsageError(f"--textfile {path}: the node exporter reads only files ending in .prom.",
                         "Name it e.g. /var/lib/node_exporter/textfile/certkit.prom.")
    atomic_write(path, textfile(report), overwrite=True)


def _print_report(report: Any) -> None:
    from certkit.cli.colour import verdict

    for c in report.certificates:
        if c.role == "ours" and c.target is None:
            say(f"certificate {c.name} (serial {c.facts.serial}): {c.days_left:.1f} days left, {c.state} "
                f"since {c.since:%Y-%m-%d %H:%M}Z")
    for crl in report.crls:
        served = ""
        if crl.served_current is not None:
            why = crl.served_error or f"it serves #{crl.served_number}"
            served = "; served at its URL" if crl.served_current else f"; NOT served at {crl.url} ({why})"
        say(f"CRL {crl.issuer} #{crl.number}: nextUpdate in {crl.seconds_left / 3600:.1f} h{served}; {crl.state} "
            f"since {crl.since:%Y-%m-%d %H:%M}Z")
    for t in report.targets:
        click.echo(f"{_p(t.target)}: " + verdict(_p(t.verdict), t.success)
                   + _p(f" ({t.state} since {t.since:%Y-%m-%d %H:%M}Z, {t.duration:.2f} s)"))
    for ch in report.changes:
        say(f"CHANGED {ch.summary}")
        for s in ch.settings:
            say(f"  affects {s.product}: {s.name}: {s.action}")


def _p(text: str) -> str:
    from certkit.core.text import printable

    return printable(text)


@watch.command("run")
@click.option("--once", is_flag=True, help="One cycle, then exit (0 all well, 1 something needs doing).")
@click.option("--every", default="15m", show_default=True, help="Time between cycles (15m, 1h ...).")
@click.option("--textfile", type=click.Path(dir_okay=False), default=None,
              help="Also write the metrics for the node exporter's textfile collector (FILE.prom, atomically).")
@click.option("--warning", default="30d", show_default=True, help="A certificate is 'expiring' within this.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one document per cycle).")
@_store_option
@home_option
def run_cmd(once: bool, every: str, textfile: str | None, warning: str, as_json: bool, store: str | None,
            managed_only: bool, home: str | None) -> None:
    """Check our certificates, our CRLs (as served at their URLs) and every target; record states and changes."""
    interval = _period(every, "--every", bare="s").total_seconds()
    watcher = _watcher(home, store, managed_only, warning)
    while True:
        report = watcher.cycle()
        _write_textfile(textfile, report)
        if as_json:
            echo_json(stamped("watch run", report.to_dict()))
        else:
            _print_report(report)
        if once:
            sys.exit(0 if report.ok else 1)
        threading.Event().wait(max(1.0, interval - report.seconds))


def _listen(text: str) -> tuple[str, int]:
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", text.strip())
    if not m:
        raise InputError(f"--listen {text!r} is not HOST:PORT.", "Write e.g. 127.0.0.1:9530 or [::1]:9530.")
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    if not 0 <= int(port) < 65536:
        raise InputError(f"--listen {text!r}: bad port.", "Give a port from 1 to 65535.")
    return host, int(port)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@watch.command("serve")
@click.option("--listen", default="127.0.0.1:9530", show_default=True,
              help="Address to serve /metrics and /healthz on (loopback unless you name another).")
@click.option("--every", default="15m", show_default=True, help="Time between cycles.")
@click.option("--textfile", type=click.Path(dir_okay=False), default=None, help="Also write FILE.prom each cycle.")
@click.option("--warning", default="30d", show_default=True, help="A certificate is 'expiring' within this.")
@_store_option
@home_option
def serve_cmd(listen: str, every: str, textfile: str | None, warning: str, store: str | None, managed_only: bool,
              home: str | None) -> None:
    """Run a cycle every --every and serve the last one's metrics for Prometheus, until interrupted."""
    from certkit.adapters.metrics import MetricsServer

    host, port = _listen(listen)
    interval = _period(every, "--every", bare="s").total_seconds()
    watcher = _watcher(home, store, managed_only, warning)
    stop = threading.Event()

    def on_cycle(report: Any, failure: BaseException | None) -> None:
        if failure is not None:
            say(f"certkit watch: the cycle failed: {failure}", err=True)
            return
        try:
            _write_textfile(textfile, report)
        except CertkitError as exc:
            say(f"certkit watch: {exc}", err=True)
        bad = [t.target for t in report.targets if not t.success]
        say(f"cycle at {report.at:%Y-%m-%d %H:%M:%S}Z: {len(report.targets)} targets, {len(bad)} failing, "
            f"{len(report.changes)} changes, {report.seconds:.2f} s", err=True)

    try:
        server = MetricsServer(lambda: watcher.last, host=host, port=port).start()
    except OSError as exc:
        raise UsageError(f"Cannot listen on {listen}: {exc.strerror or exc}.",
                         "Choose another --listen address or port.") from None
    where = f"[{host}]" if ":" in host else host
    say(f"Serving http://{where}:{server.port}/metrics and /healthz"
        + ("" if _is_loopback(host) else " on a non-loopback address: firewall it") + "; Ctrl-C stops.", err=True)
    try:
        watcher.run_forever(interval, stop, on_cycle)
    finally:
        stop.set()
        server.close()


class _NagiosCommand(click.Command):
    """A Nagios plugin: misuse is UNKNOWN (3), not click's 2 (CRITICAL to Nagios), with the plugin's one line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            click.echo(f"CERTKIT UNKNOWN: {_p(exc.format_message())}")
            sys.exit(3)


@watch.command("check", cls=_NagiosCommand)
@click.argument("target")
@click.option("--warning", default="30d", show_default=True, help="WARNING when the certificate expires within this.")
@click.option("--critical", default="7d", show_default=True, help="CRITICAL when it expires within this.")
@click.option("--role", type=click.Choice(["partner", "ours"]), default="partner", show_default=True,
              help="Whose endpoint it is (for the settings a certificate change affects).")
@_probe_options
@_store_option
@home_option
def check_cmd(target: str, warning: str, critical: str, role: str, store: str | None, managed_only: bool,
              home: str | None, **options: Any) -> None:
    """A Nagios/Icinga plugin: probe TARGET once; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.

    The first line is ``CERTKIT STATUS: text | perfdata`` (days_left, duration); a certificate that differs from
    the one the last watch cycle saw there is a WARNING naming the settings it affects.
    """
    try:
        result = _check(target, warning, critical, role, store, managed_only, home, options)
    except CertkitError as exc:
        click.echo(f"CERTKIT UNKNOWN: {_p(str(exc))}")
        sys.exit(3)
    click.echo(_p_lines(result.output()))
    sys.exit(int(result.status))


def _p_lines(text: str) -> str:
    return "\n".join(_p(line) for line in text.splitlines())


def _check(target: str, warning: str, critical: str, role: str, store: str | None, managed_only: bool,
           home: str | None, options: dict[str, Any]) -> Any:
    from certkit.adapters.watchdb import FILE, WatchHistory
    from certkit.checks.watch import check

    warn = _period(warning, "--warning", bare="d").total_seconds() / 86400
    crit = _period(critical, "--critical", bare="d").total_seconds() / 86400
    wt = _target(target, role, "added", options)
    identity = None
    if wt.options.get("as_name"):
        from certkit.ca import CertificateAuthority

        with CertificateAuthority.open(resolve_home(home)) as authority:
            identity = authority.identity_for(wt.options["as_name"], passphrase=key_passphrase())
    anchors = open_store(home, store).anchor_set(managed_only=managed_only)
    history_file = resolve_home(home) / FILE
    history = WatchHistory.open(resolve_home(home)) if history_file.is_file() else None
    try:
        return check(wt, anchors=anchors, identity=identity, warning_days=warn, critical_days=crit, history=history)
    finally:
        if history is not None:
            history.close()


@watch.command("report")
@click.option("--html", "html_file", type=click.Path(dir_okay=False), default=None,
              help="Also write the summary as one HTML file.")
@click.option("--hours", default=24, show_default=True, type=click.IntRange(1, 24 * 366),
              help="The period the summary covers.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@home_option
def report_cmd(html_file: str | None, hours: int, as_json: bool, home: str | None) -> None:
    """The daily summary: every state with the time it began, and what changed in the last --hours."""
    from certkit.adapters.fs import atomic_write
    from certkit.checks.watch import render_summary, summary
    from certkit.clock import SystemClock

    with _history(home) as history:
        s = summary(history, clock=SystemClock(), hours=hours)
    if html_file:
        atomic_write(html_file, render_summary(s, html=True).encode("utf-8"), overwrite=True)
    if as_json:
        echo_json(stamped("watch report", s.to_dict()))
    else:
        click.echo(render_summary(s), nl=False)
