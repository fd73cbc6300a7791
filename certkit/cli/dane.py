"""``certkit dane tlsa HOST``: the TLSA records to publish for our MX (RFC 7672).

Records for the current key (DANE-EE ``3 1 1``) and for the CA certificate that issued it (DANE-TA
``2 1 1``), from the CA home or from the chain file the server sends. Exit 0, or 2 on misuse.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from certkit.adapters.inputs import read_input
from certkit.cli.common import CertkitGroup, echo_json, home_option, resolve_home, say
from certkit.clock import SystemClock
from certkit.core.dane import TlsaRecord, Usage, issued_by, owner_name, tlsa_for, zone_line
from certkit.core.formats import load_certificates, sha256_fingerprint
from certkit.core.names import dns_name
from certkit.errors import InputError, StoreError

if TYPE_CHECKING:
    from cryptography import x509


__all__ = ["COMMANDS", "JSON_SCHEMA_VERSION", "dane"]

#: The version of the ``--json`` document (certkit/schemas/dane-tlsa.schema.json).
JSON_SCHEMA_VERSION = 1


def _from_home(home: Path, host: str, at: dt.datetime) -> tuple[x509.Certificate, x509.Certificate, bool]:
    """The leaf for ``host``, its issuing CA, and whether the chain the CA writes carries that CA."""
    from certkit.ca import CertificateAuthority

    with CertificateAuthority.open(home) as authority:
        leaf = authority.newest_valid(host, at=at, instead="give --cert FILE").certificate
        issuer = next((c for c in (*authority.intermediates, authority.root) if issued_by(leaf, c)), None)
        if issuer is None:
            raise StoreError(f"No CA certificate in {home} verifies the certificate of {host}.",
                             "Restore the CA home from a backup, or give --cert FILE.")
        return leaf, issuer, any(issuer is c for c in authority.intermediates)


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
    from cryptography import x509 as _x509
    from cryptography.x509.oid import NameOID

    try:
        san = cert.extensions.get_extension_for_class(_x509.SubjectAlternativeName).value
        names = {n.lower().rstrip(".") for n in san.get_values_for_type(_x509.DNSName)}
    except _x509.ExtensionNotFound:
        names = set()
    return names or {str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}


def _entry(record: TlsaRecord, cert: x509.Certificate, role: str, host: str, port: int,
           ttl: int | None) -> dict[str, Any]:
    return {
        "name": owner_name(host, port), "port": port, "ttl": ttl,
        "usage": record.usage, "selector": record.selector, "matching_type": record.matching_type,
        "data": record.data.hex(), "line": zone_line(record, host, port, ttl=ttl),
        "certificate": {
            "role": role,
            "subject": cert.subject.rfc4514_string(),
            "sha256": sha256_fingerprint(cert),
            "not_after": cert.not_valid_after_utc.isoformat().replace("+00:00", "Z"),
        },
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
        leaf, ca_cert, issuer_sent = _from_home(resolve_home(home), name, now)
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


COMMANDS: list[click.Command] = [dane]
