"""``certkit dane tlsa HOST``: the TLSA records to publish for our MX (RFC 7672), and
``certkit dane rollover status|next|switch|retire HOST``: a DANE-EE key rollover without a gap.

Records for the current key (DANE-EE ``3 1 1``) and for the CA certificate that issued it (DANE-TA
``2 1 1``), from the CA home or from the chain file the server sends. Exit 0, or 2 on misuse.

The rollover commands (:mod:`certkit.dane_rollover`) print the RRset to have after the step on stdout
as zone-file lines, and what to add or remove on stderr. Exit 0; 1 when the step may not be taken *yet*
(switch before the next record is seen in DNS or before TTL + margin have passed since; retire before
switch + TTL + margin): run it again later; 2 on misuse (a step out of order, a bad option).

``next --to-ca NEW_HOME`` starts a CA change: the same steps, with the new CA's records (the RRset
published now is read from DNS: exit 1 when DNS gives no answer; exit 2 for a DANE-TA-only host whose new
CA has no intermediate). ``switch`` then issues from NEW_HOME (its passphrase from --to-ca-passphrase-file,
else $CERTKIT_CA_PASSPHRASE, else a prompt).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from certkit.adapters.inputs import read_input
from certkit.cli.common import (
    CA_PASSPHRASE_ENV,
    KEY_PASSPHRASE_ENV,
    CertkitGroup,
    echo_json,
    home_option,
    read_secret,
    resolve_home,
    say,
)
from certkit.clock import SystemClock
from certkit.core.dane import TlsaRecord, Usage, issued_by, owner_name, tlsa_for, zone_line
from certkit.core.formats import load_certificates
from certkit.core.jsonfacts import certificate_facts, rfc3339_or_none, serial_hex
from certkit.core.names import dns_name
from certkit.errors import InputError
from certkit.schemas import document

if TYPE_CHECKING:
    from cryptography import x509

    from certkit.ca import CertificateAuthority
    from certkit.dane_rollover import DaneRollover, RolloverStep


__all__ = ["COMMANDS", "JSON_SCHEMA_VERSION", "dane"]

#: The version of the ``--json`` document (certkit/schemas/dane-tlsa.schema.json).
JSON_SCHEMA_VERSION = document("dane tlsa").version
#: The version of the ``dane rollover ... --json`` document (certkit/schemas/dane-rollover.schema.json).
ROLLOVER_SCHEMA_VERSION = document("dane rollover status").version


def certificates_from_home(home: Path, host: str, at: dt.datetime
                           ) -> tuple[x509.Certificate, x509.Certificate, bool]:
    """The leaf for ``host`` in the CA at ``home``, its issuing CA, and whether the CA's chain carries it."""
    from certkit.ca import CertificateAuthority

    with CertificateAuthority.open(home) as authority:
        return authority.dane_certificates(host, at=at, instead="give --cert FILE")


def _from_file(path: str, need_issuer: bool) -> tuple[x509.Certificate, x509.Certificate | None]:
    certs = load_certificates(read_input(path, what="certificate file"), source=path)
    leaf = certs[0]
    issuer = next((c for c in certs[1:] if issued_by(leaf, c)), None)
    if issuer is None and need_issuer:
        raise InputError(f"{path} does not hold the CA certificate that issued its first certificate, so there is "
                         "no DANE-TA record to compute.",
                         "Give the chain file the server sends, leaf first (e.g. FQDN.chain.pem, with the root "
                         "appended when the CA has no intermediate), or use --usage ee.")
    return leaf, issuer


def _names(cert: x509.Certificate) -> set[str]:
    from cryptography.x509.oid import NameOID

    from certkit.core.extensions import san_dns_names

    names = {n.lower().rstrip(".") for n in san_dns_names(cert)}
    return names or {str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}


def _entry(record: TlsaRecord, cert: x509.Certificate, role: str, host: str, port: int,
           ttl: int | None) -> dict[str, Any]:
    return {
        "name": owner_name(host, port), "port": port, "ttl": ttl,
        "usage": record.usage, "selector": record.selector, "matching_type": record.matching_type,
        "data": record.data.hex(), "line": zone_line(record, host, port, ttl=ttl),
        "certificate": {"role": role, **certificate_facts(cert)},
    }


@click.group(cls=CertkitGroup)
def dane() -> None:
    """DANE for our MX: the TLSA records to publish in the signed zone."""


@dane.command("tlsa")
@click.argument("host")
@click.option("--port", type=click.IntRange(1, 65535), default=25, show_default=True)
@click.option("--usage", type=click.Choice(["ee", "ta", "both"], case_sensitive=False), default="both",
              show_default=True, help="ee: DANE-EE 3 1 1 for our key; ta: DANE-TA 2 1 1 for the issuing CA.")
@click.option("--cert", "cert_file", type=click.Path(readable=False), default=None,
              help="The chain file the server sends (PEM, leaf first) instead of the CA home.")
@click.option("--ttl", type=click.IntRange(0, 2147483647), default=None, help="Put this TTL in the zone lines.")
@click.option("--json", "as_json", is_flag=True)
@home_option
def tlsa(host: str, port: int, usage: str, cert_file: str | None, ttl: int | None, as_json: bool,
         home: str | None) -> None:
    """The TLSA records for HOST (our MX): DANE-EE for the current key and DANE-TA for its issuing CA.

    From the CA home: the newest valid certificate naming HOST (as probe --as picks it). With
    --cert FILE: that chain file's first certificate and the CA certificate in it that issued it.
    """
    name = dns_name(host)
    usage = usage.lower()
    if cert_file and home:
        raise InputError("Give --cert FILE or --home DIR, not both.",
                         "--cert reads the chain the server sends; --home looks the certificate up in the CA.")
    now = SystemClock().now()
    want_ta = usage in ("ta", "both")
    issuer_sent = True
    if cert_file:
        leaf, issuer = _from_file(cert_file, want_ta)
        if want_ta and name not in _names(leaf) and f"*.{name.partition('.')[2]}" not in _names(leaf):
            say(f"warning: the certificate in {cert_file} does not name {name}; DANE-TA senders check the name.",
                err=True)
    else:
        leaf, ca_cert, issuer_sent = certificates_from_home(resolve_home(home), name, now)
        issuer = ca_cert
    out: list[dict[str, Any]] = []
    if usage in ("ee", "both"):
        out.append(_entry(tlsa_for(leaf, Usage.DANE_EE), leaf, "leaf", name, port, ttl))
    if want_ta:
        assert issuer is not None
        out.append(_entry(tlsa_for(issuer, Usage.DANE_TA), issuer, "issuer", name, port, ttl))
    if as_json:
        echo_json({"schema_version": JSON_SCHEMA_VERSION, "host": name, "port": port,
                   "source": cert_file if cert_file else str(resolve_home(home)), "records": out})
    else:
        for item in out:
            click.echo(item["line"])
        for item in out:
            c = item["certificate"]
            what = "our key" if c["role"] == "leaf" else "the issuing CA"
            say(f"; {item['usage']} {item['selector']} {item['matching_type']}: {what}, {c['subject']} "
                f"(not after {c['not_after'][:10]})", err=True)
    if want_ta and not issuer_sent:
        say("note: DANE-TA (2 1 1) matches only when the server sends this CA certificate in its chain; this CA "
            "has no intermediate, so FQDN.chain.pem holds the leaf alone: append the root (certkit ca root) to the "
            "chain the server sends, or publish only --usage ee.", err=True)
    if leaf.not_valid_after_utc < now and want_ta:
        say("warning: the certificate has expired; DANE-EE ignores that, DANE-TA does not.", err=True)



# ---------------------------------------------------------------------------------------------
# certkit dane rollover


def parse_duration(text: str, option: str = "--margin") -> dt.timedelta:
    """``3600``, ``90s``, ``30m``, ``1h``, ``1h30m``, ``2d``: a bare number is seconds."""
    t = text.strip().lower()
    parts = re.findall(r"(\d+)([smhd]?)", t)
    if not t or "".join(n + u for n, u in parts) != t or (len(parts) > 1 and not all(u for _, u in parts)):
        raise InputError(f"{option} {text!r} is not a duration.", "Write e.g. 3600, 90m, 1h or 1h30m.")
    size = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return dt.timedelta(seconds=sum(int(n) * size[u] for n, u in parts))


class DnsLookup:
    """``lookup(owner) -> records`` through :func:`certkit.adapters.dns.lookup_tlsa` (``None`` when DNS gave no
    answer, a SERVFAIL included). Presence only: whether the answer was DNSSEC-validated is the senders'
    business. :attr:`served_ttls` keeps the TTLs the resolver served (lower bounds of the zone's TTL)."""

    def __init__(self, nameserver: str | None, timeout: float = 5.0) -> None:
        from certkit.adapters.dns import parse_nameserver

        if nameserver is not None:
            parse_nameserver(nameserver)  # a malformed --nameserver is misuse before anything is asked
        self.nameserver = nameserver
        self.timeout = timeout
        self.served_ttls: list[int] = []

    def __call__(self, owner: str) -> list[TlsaRecord] | None:
        from certkit.adapters.dns import lookup_tlsa

        match = re.fullmatch(r"_(\d+)\._tcp\.(.+)\.", owner)
        if match is None:
            raise InputError(f"{owner} is not a TLSA owner name for TCP.")
        found = lookup_tlsa(match[2], int(match[1]), nameserver=self.nameserver, timeout=self.timeout)
        if found.bogus or found.error is not None:
            return None
        if found.ttl is not None:
            self.served_ttls.append(found.ttl)
        return list(found.records)

    def served_ttl(self, owner: str) -> int | None:
        """Ask for ``owner`` once; the longest TTL DNS has served so far (``None``: no answer)."""
        self(owner)
        return max(self.served_ttls) if self.served_ttls else None


def dns_lookup(nameserver: str | None, timeout: float = 5.0) -> DnsLookup:
    """The rollover's DNS lookup (see :class:`DnsLookup`)."""
    return DnsLookup(nameserver, timeout)


def _rollover_options(f: Any) -> Any:
    for option in reversed([
        click.argument("host"),
        click.option("--port", type=click.IntRange(1, 65535), default=None,
                     help="The TLSA owner's port (default 25; next stores it for the later steps)."),
        click.option("--ttl", type=click.IntRange(0, 2147483647), default=None,
                     help="The TLSA RRset's TTL in seconds (next: default 3600; later steps can only lengthen it)."),
        click.option("--margin", default=None,
                     help="Propagation margin added to the TTL (next: default 1h; e.g. 30m, 2h)."),
        click.option("--nameserver", default=None, metavar="IP[:PORT]",
                     help="Ask this DNS server whether the next record is visible (default: the system's)."),
        click.option("--json", "as_json", is_flag=True),
        home_option,
    ]):
        f = option(f)
    return f


def _open_rollover(home: str | None, host: str, port: int | None, *, unlock: str | None = None
                   ) -> tuple[CertificateAuthority, DaneRollover]:
    from certkit.ca import CertificateAuthority
    from certkit.dane_rollover import DaneRollover

    authority = CertificateAuthority.open(resolve_home(home))
    try:
        if unlock is not None:
            authority.unlock(read_secret(env=CA_PASSPHRASE_ENV, file=unlock or None, prompt="CA passphrase"))
        rollover = DaneRollover(authority, host, port=port or 25)
        stored = rollover.load()
        if port is None and stored.port != 25:
            rollover = DaneRollover(authority, host, port=stored.port)
    except BaseException:
        authority.close()
        raise
    return authority, rollover


def _t(value: dt.datetime | None) -> str | None:
    return rfc3339_or_none(value)


def _step_json(step: RolloverStep, now: dt.datetime) -> dict[str, Any]:
    from certkit.dane_rollover import earliest_retire, earliest_switch, projected_switch

    s = step.state
    ttl = s.ttl

    def lines(records: Sequence[TlsaRecord]) -> list[str]:
        return step.lines(records, ttl)

    return {
        "schema_version": ROLLOVER_SCHEMA_VERSION, "host": s.host, "port": s.port, "name": owner_name(s.host, s.port),
        "phase": str(s.phase), "ttl": ttl, "margin_seconds": int(s.margin.total_seconds()),
        "records": lines(step.records), "publish": lines(step.publish), "remove": lines(step.remove),
        "current": s.current.text() if s.current else None, "next": s.next.text() if s.next else None,
        "visible": step.visible, "to_ca": s.to_ca, "ca_home": s.ca_home,
        "times": {"now": _t(now), "next_at": _t(s.next_at), "seen_at": _t(s.seen_at),
                  "earliest_switch": _t(earliest_switch(s)), "projected_switch": _t(projected_switch(s, now)),
                  "switched_at": _t(s.switched_at), "earliest_retire": _t(earliest_retire(s)),
                  "retired_at": _t(s.retired_at)},
        "certificate": None if step.in_use is None else {
            "serial": serial_hex(step.in_use.serial), "not_after": _t(step.in_use.not_after),
            "record": tlsa_for(step.in_use.certificate, Usage.DANE_EE).text()},
        "files": {k: str(v) for k, v in step.issued.paths.items()} if step.issued is not None else {},
        "notes": list(step.notes),
    }


def _emit(step: RolloverStep, now: dt.datetime, as_json: bool, summary: Sequence[str]) -> None:
    doc = _step_json(step, now)
    if as_json:
        echo_json(doc)
        return
    for line in doc["records"]:
        click.echo(line)
    for line in doc["publish"]:
        say(f"; add:    {line}", err=True)
    for line in doc["remove"]:
        say(f"; remove: {line}", err=True)
    for line in [*summary, *(f"note: {n}" for n in step.notes)]:
        say(line, err=True)


@dane.group("rollover", cls=CertkitGroup)
def rollover() -> None:
    """DANE-EE key rollover without a gap (RFC 7671 8.1): next, wait, switch, wait, retire."""


@rollover.command("status")
@_rollover_options
def rollover_status(host: str, port: int | None, ttl: int | None, margin: str | None, nameserver: str | None,
                    as_json: bool, home: str | None) -> None:
    """The phase, the times, and the records to have; with a pending key, whether DNS shows it.

    The first time DNS shows the next record starts the switch clock (TTL + margin).
    """
    from certkit.dane_rollover import Phase, earliest_retire, earliest_switch, projected_switch

    authority, ro = _open_rollover(home, host, port)
    with authority:
        pending = ro.load().phase is Phase.NEXT_PUBLISHED
        step = ro.status(dns_lookup(nameserver) if pending else None)
        now = authority.clock.now()
    s = step.state
    if as_json:
        echo_json(_step_json(step, now))
        return
    say(f"{s.host} port {s.port}: {s.phase} (TTL {s.ttl} s, margin {int(s.margin.total_seconds())} s)")
    rows: list[tuple[str, str | None]] = [("next key published", _t(s.next_at))]
    if s.phase is Phase.NEXT_PUBLISHED:
        seen = _t(s.seen_at) or ("not yet: DNS gave no answer" if step.visible is None else "not yet")
        rows += [("next record seen", seen),
                 ("switch from", _t(earliest_switch(s)) or f"TTL + margin after it is seen "
                                                        f"({_t(projected_switch(s, now))} if seen now)")]
    if s.phase is Phase.SWITCHED:
        rows += [("switched", _t(s.switched_at)), ("retire from", _t(earliest_retire(s)))]
    rows.append(("last retired", _t(s.retired_at)))
    if s.to_ca is not None or s.ca_home is not None:
        rows.append(("CA change to" if s.phase is not Phase.STABLE else "moved to CA", s.to_ca or s.ca_home))
    if step.in_use is not None:
        rows.append(("certificate in use", f"serial {step.in_use.serial_hex}, not after {_t(step.in_use.not_after)}"))
    for label, value in rows:
        if value:
            say(f"  {label:<20} {value}")
    say("Records to publish:")
    for line in step.lines(step.records, s.ttl):
        click.echo(line)
    for note in step.notes:
        say(f"note: {note}", err=True)


@rollover.command("next")
@_rollover_options
@click.option("--to-ca", "to_ca", type=click.Path(file_okay=False), default=None, metavar="NEW_HOME",
              help="A CA change: the next certificate comes from the CA in NEW_HOME (reads the RRset from DNS).")
def rollover_next(host: str, port: int | None, ttl: int | None, margin: str | None, nameserver: str | None,
                  as_json: bool, home: str | None, to_ca: str | None) -> None:
    """Generate the next key (kept 0600 in the CA home) and print the RRset to publish: current + next
    (with --to-ca: the records published now + the new CA's 2 1 1 and/or the next key's 3 1 1)."""
    from certkit.dane_rollover import DEFAULT_MARGIN, DEFAULT_TTL, projected_switch

    wait = parse_duration(margin) if margin is not None else DEFAULT_MARGIN
    lookup = None
    if nameserver is not None or to_ca is not None:
        lookup = dns_lookup(nameserver)  # a malformed --nameserver is misuse here too
    authority, ro = _open_rollover(home, host, port)
    with authority:
        step = ro.next(ttl=DEFAULT_TTL if ttl is None else ttl, margin=wait,
                       to_ca=Path(to_ca) if to_ca is not None else None, lookup=lookup)
        now = authority.clock.now()
    _emit(step, now, as_json, [
        f"Publish {'the new records' if to_ca else 'both records'} now. Then run certkit dane rollover status "
        f"{step.state.host}: the switch waits "
        f"TTL + margin from the first time DNS shows the next record ({_t(projected_switch(step.state, now))} "
        "at the earliest)."])


@rollover.command("switch")
@_rollover_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Where to write the new certificate's files (default: over the current certificate's files).")
@click.option("--passphrase-file", type=click.Path(dir_okay=False), default=None,
              help=f"File with the CA passphrase (else ${CA_PASSPHRASE_ENV}, else a prompt).")
@click.option("--key-passphrase-file", type=click.Path(dir_okay=False), default=None,
              help=f"Encrypt the written key with this passphrase (or set ${KEY_PASSPHRASE_ENV}).")
@click.option("--to-ca-passphrase-file", type=click.Path(dir_okay=False), default=None,
              help=f"A CA change: file with the new CA's passphrase (else ${CA_PASSPHRASE_ENV}, else a prompt).")
def rollover_switch(host: str, port: int | None, ttl: int | None, margin: str | None, nameserver: str | None,
                    as_json: bool, home: str | None, out_dir: str | None, passphrase_file: str | None,
                    key_passphrase_file: str | None, to_ca_passphrase_file: str | None) -> None:
    """Issue the certificate for the next key and write its files, once DNS has shown the next record
    for TTL + margin. Exit 1 when it is too early or DNS does not show the record yet."""
    import os

    from certkit.ca import WriteOptions
    from certkit.dane_rollover import Phase, earliest_retire

    wait = parse_duration(margin) if margin is not None else None
    lookup = dns_lookup(nameserver)
    key_pass = None
    if key_passphrase_file or os.environ.get(KEY_PASSPHRASE_ENV):
        key_pass = read_secret(env=KEY_PASSPHRASE_ENV, file=key_passphrase_file, prompt="Key passphrase",
                               what="key passphrase", option="--key-passphrase-file")
    authority, ro = _open_rollover(home, host, port)
    with authority:
        to_ca_pass = None
        if ro.load().to_ca is not None:
            to_ca_pass = read_secret(env=CA_PASSPHRASE_ENV, file=to_ca_passphrase_file, prompt="New CA passphrase",
                                     what="new CA passphrase", option="--to-ca-passphrase-file")
        else:
            authority.unlock(read_secret(env=CA_PASSPHRASE_ENV, file=passphrase_file, prompt="CA passphrase"))
        write = None
        if out_dir is not None or key_pass is not None:
            default = ro.default_write(ro.in_use())
            folder = Path(out_dir) if out_dir is not None else (default.out_dir if default else Path("."))
            write = WriteOptions(folder, key_passphrase=key_pass,
                                 overwrite=default is not None and folder.resolve() == default.out_dir.resolve())
        # RFC 7671 8.1: the wait is at least the RRset's real TTL. A resolver serves a countdown of it, so
        # what it serves is a lower bound: when it is longer than the TTL the rollover counts with, wait longer.
        state = ro.load()
        live = lookup.served_ttl(owner_name(host, state.port)) if state.phase is Phase.NEXT_PUBLISHED else None
        if live is not None and live > max(ttl or 0, state.ttl):
            click.echo(f"note: DNS serves the TLSA RRset with a TTL of {live} s, longer than the {state.ttl} s "
                       f"the rollover counted with: waiting at least {live} s.", err=True)
            ttl = live
        step = ro.switch(lookup, write=write, ttl=ttl, margin=wait, to_ca_passphrase=to_ca_pass)
        now = authority.clock.now()
    files = ", ".join(str(p) for p in step.issued.paths.values()) if step.issued is not None else ""
    _emit(step, now, as_json, [
        f"Switched {step.state.host} to the next " + (f"CA ({step.state.ca_home})" if step.state.to_ca else "key")
        + ": certificate serial "
        f"{step.in_use.serial_hex if step.in_use else '?'}" + (f" in {files}" if files else "") + ".",
        "Install it on every server that answers for this name and reload the MTA; keep both records until "
        f"certkit dane rollover retire (from {_t(earliest_retire(step.state))})."])


@rollover.command("retire")
@_rollover_options
def rollover_retire(host: str, port: int | None, ttl: int | None, margin: str | None, nameserver: str | None,
                    as_json: bool, home: str | None) -> None:
    """Remove the old record (TTL + margin after the switch): print the RRset to keep, the new record alone."""
    wait = parse_duration(margin) if margin is not None else None
    authority, ro = _open_rollover(home, host, port)
    with authority:
        step = ro.retire(ttl=ttl, margin=wait)
        now = authority.clock.now()
    summary = ["Remove the old record from the zone; the rollover is stable again."]
    if step.state.ca_home is not None:
        summary = [f"Remove the old records from the zone; {step.state.host} now belongs to the CA in "
                   f"{step.state.ca_home}: run later rollovers with --home {step.state.ca_home}."]
    _emit(step, now, as_json, summary)


COMMANDS: list[click.Command] = [dane]
