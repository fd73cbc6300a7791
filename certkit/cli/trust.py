"""``certkit trust ...``: the managed trust store and the chain verifier.

Exit codes: 0 success (``verify``: the certificate is accepted), 1 failure (``verify``: it is not; or
the store is damaged), 2 misuse (bad option, unreadable file, refused anchor).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from cryptography import x509

from certkit.adapters.inputs import read_input
from certkit.adapters.roots import certifi_version, public_roots
from certkit.adapters.truststore import entry_dict
from certkit.cli.colour import severity, verdict
from certkit.cli.common import (
    PFX_PASSWORD_ENV,
    CertkitGroup,
    F,
    echo_json,
    home_option,
    open_store,
    parse_at,
    read_secret,
    say,
)
from certkit.core.formats import load_certificates, load_crl, sha1_thumbprint, sha256_fingerprint
from certkit.core.jsonfacts import certificate_facts
from certkit.core.text import plural, printable
from certkit.core.trust import is_ca
from certkit.core.verify import VerifyOptions, verify_chain
from certkit.errors import InputError, PassphraseError, UsageError
from certkit.schemas import stamped

if TYPE_CHECKING:
    from certkit.adapters.truststore import AddResult
    from certkit.checks.trustfetch import Offer

__all__ = ["COMMANDS", "trust"]


def _json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (docs/json.md).")(f)


def _store_option(f: F) -> F:
    return click.option("--store", "store", type=click.Path(file_okay=False), default=None,
                        help="Trust store folder (default: <home>/trust).")(f)


def _pfx_option(f: F) -> F:
    return click.option("--pfx-password-file", "pfx_password_file", type=click.Path(), default=None,
                        help=f"File holding the PFX password (else ${PFX_PASSWORD_ENV} or a prompt).")(f)


def _read_certs(path: str, pfx_password_file: str | None) -> list[x509.Certificate]:
    data = read_input(path, what="certificate file")
    try:
        return load_certificates(data, source=path)
    except PassphraseError:
        password = read_secret(env=PFX_PASSWORD_ENV, file=pfx_password_file,
                               prompt=f"Password for {printable(path, 240)}", what="PFX password",
                               option="--pfx-password-file")
        return load_certificates(data, source=path, password=password)


def _validity(cert: x509.Certificate) -> str:
    return f"{cert.not_valid_before_utc:%Y-%m-%d} .. {cert.not_valid_after_utc:%Y-%m-%d}"


@click.group("trust", cls=CertkitGroup)
def trust() -> None:
    """The managed trust store (partner roots, pinned certificates) and the chain verifier."""


@trust.command("add")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--label", default=None, help="A name for the anchor(s), e.g. fabrikam.")
@click.option("--partner", "partners", multiple=True, help="Partner domain this anchor is for (repeatable).")
@click.option("--pin", is_flag=True, help="Trust exactly this non-CA certificate (a partner's self-signed Edge).")
@click.option("--force", is_flag=True, help="Accept an expired, weak-key (RSA < 2048) or SHA-1-signed anchor.")
@click.option("--ca-only", is_flag=True,
              help="Take only the CA certificates from the files (e.g. the root inside a chain or a PFX).")
@_pfx_option
@_json_option
@home_option
@_store_option
def add_cmd(files: tuple[str, ...], label: str | None, partners: tuple[str, ...], pin: bool, force: bool,
            ca_only: bool, pfx_password_file: str | None, as_json: bool, home: str | None, store: str | None
            ) -> None:
    """Trust the certificates in FILE... (PEM, DER, PKCS#7 .p7b/.p7c, or the certificates inside a PFX)."""
    certs: list[x509.Certificate] = []
    sources: list[str | None] = []
    for f in files:  # read everything first: one bad file adds nothing
        for cert in _read_certs(f, pfx_password_file):
            if ca_only and not is_ca(cert):
                continue
            certs.append(cert)
            sources.append(str(Path(f).resolve()))
    if not certs:
        raise InputError(f"{', '.join(files)} hold no CA certificate.",
                         "Give the partner's root, or trust exactly a certificate with --pin.")
    ts = open_store(home, store)
    results = ts.add_many(certs, label=label, partners=partners, pin=pin, force=force, sources=sources)
    if as_json:
        echo_json(stamped("trust add", {
            "store": str(ts.path), "count": len(ts),
            "anchors": [{**r.anchor.describe(), "added": r.added,
                         "accepted_with": _accepted_with(r)}
                        for r in results]}))
        return
    for r in results:
        c = r.anchor.cert
        state = "Added" if r.added else "Already trusted"
        kind = "CA" if is_ca(c) else "pinned (not a CA)"
        say(f"{state}: {c.subject.rfc4514_string()}")
        say(f"  SHA-256 {sha256_fingerprint(c)}")
        say(f"  SHA-1   {sha1_thumbprint(c)}")
        say(f"  valid   {_validity(c)}   {kind}")
        for refusal in r.overridden:
            say(f"  accepted with --{refusal.override}: {refusal.reason}")
    say(f"Store: {ts.path} ({plural(len(ts), 'anchor')})")


def _accepted_with(result: AddResult) -> list[dict[str, str]]:
    """The refusals accepted by --pin or --force, as ``trust add/fetch --json`` lists them (by the flag)."""
    return [{"override": f"--{r.override}", "reason": r.reason} for r in result.overridden]


@trust.command("fetch")
@click.argument("target")
@click.option("--starttls", "starttls", type=click.Choice(["smtp", "none"]), default="smtp", show_default=True,
              help="smtp: STARTTLS on an SMTP port; none: TLS from the first byte (port 465).")
@click.option("--port", type=int, default=None, help="Port when TARGET has none (25, or 465 with --starttls none).")
@click.option("--expect-sha256", "expect", default=None,
              help="Add only if the offered certificate has this SHA-256 fingerprint (colons and case ignored).")
@click.option("--label", default=None, help="A name for the anchor, e.g. fabrikam.")
@click.option("--partner", "partners", multiple=True, help="Partner domain this anchor is for (repeatable).")
@click.option("--pin", is_flag=True, help="Offer the endpoint's own (leaf) certificate, to trust exactly it.")
@click.option("--force", is_flag=True, help="Accept an expired, weak-key or SHA-1-signed anchor.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds per step.")
@_json_option
@home_option
@_store_option
def fetch_cmd(target: str, starttls: str, port: int | None, expect: str | None, label: str | None,
              partners: tuple[str, ...], pin: bool, force: bool, timeout: float, as_json: bool, home: str | None,
              store: str | None) -> None:
    """Take the chain a live endpoint presents and offer its top certificate (or, with --pin, its leaf).

    It is added only when its SHA-256 fingerprint equals --expect-sha256 (get it from the partner over
    another channel) or when you confirm it interactively: a certificate fetched over the network proves
    nothing by itself.
    """
    from certkit.checks.trustfetch import fetch_offer

    ts = open_store(home, store)  # a damaged store is reported before any network traffic
    offer = fetch_offer(target, port=port, implicit_tls=starttls == "none", pin=pin, timeout=timeout)
    # With --json the description goes to stderr: stdout carries the JSON document alone.
    _show_offer(offer, err=as_json)
    if expect is not None:
        offer.check_fingerprint(expect)
    elif sys.stdin.isatty():
        if not click.confirm("Trust this certificate?", default=False, err=as_json):
            raise UsageError("Not added.", "Run again and confirm, or use --expect-sha256 FP.")
    else:
        raise UsageError("Not added: no --expect-sha256 was given and there is no terminal to confirm on.",
                         "Get the SHA-256 fingerprint from the partner and pass --expect-sha256 FP.")
    result = offer.add_to(ts, label=label, partners=partners, force=force)
    if as_json:
        echo_json(stamped("trust fetch", {
            "host": offer.host, "port": offer.port, "starttls": starttls,
            "chain": [certificate_facts(c) for c in offer.chain],
            "anchor": {**result.anchor.describe(), "added": result.added,
                       "accepted_with": _accepted_with(result)},
            "store": str(ts.path), "count": len(ts)}))
        return
    say(f"{'Added' if result.added else 'Already trusted'}; store: {ts.path} ({plural(len(ts), 'anchor')})")


def _show_offer(offer: Offer, *, err: bool = False) -> None:
    offered = offer.certificate
    say(f"{offer.host}:{offer.port} presented {plural(len(offer.chain), 'certificate')}; offering "
        f"{'its own certificate' if offer.pin else 'the top of the chain'}:", err=err)
    say(f"  subject {offered.subject.rfc4514_string()}", err=err)
    say(f"  issuer  {offered.issuer.rfc4514_string()}", err=err)
    say(f"  SHA-256 {offer.fingerprint}", err=err)
    say(f"  SHA-1   {sha1_thumbprint(offered)}", err=err)
    say(f"  valid   {_validity(offered)}   {'CA' if is_ca(offered) else 'not a CA'}", err=err)
    if offer.is_intermediate:
        say("  note    this is an intermediate, not a root: trusting it trusts everything it signs", err=err)


@trust.command("list")
@_json_option
@home_option
@_store_option
def list_cmd(as_json: bool, home: str | None, store: str | None) -> None:
    """List the managed anchors, and say which certifi (Mozilla) root bundle is also trusted."""
    ts = open_store(home, store)
    ts.anchors()  # every file hash-checked: an anchor changed behind certkit's back is reported, not listed
    entries = ts.entries()
    roots = len(public_roots())
    if as_json:
        echo_json(stamped("trust list", {
            "store": str(ts.path), "anchors": [entry_dict(e) for e in entries],
            "stray_files": [str(p) for p in ts.stray], "certifi": {"version": certifi_version(), "roots": roots}}))
        return
    if not entries:
        say(f"No managed anchors in {ts.path}.")
    for e in entries:
        kind = "CA" if e.get("is_ca") else "pinned"
        partners = ",".join(e.get("partners") or []) or "-"
        say(f"{e['fingerprint_sha256'][:16]}  {kind:<6}  {e['not_after'][:10]}  {e.get('label') or '-':<12}  "
                   f"{partners:<20}  {e['subject']}")
    for p in ts.stray:
        say(f"warning: {p} is not in the index and is not trusted", err=True)
    say(f"Public roots: certifi {certifi_version()} ({roots} Mozilla roots), used unless --managed-only.")


@trust.command("show")
@click.argument("ref")
@_json_option
@home_option
@_store_option
def show_cmd(ref: str, as_json: bool, home: str | None, store: str | None) -> None:
    """Show one anchor (by fingerprint, fingerprint prefix, SHA-1 thumbprint or label)."""
    ts = open_store(home, store)
    entry = ts.get(ref)
    ts.certificate(entry["fingerprint_sha256"])  # integrity check: never show a changed file as trusted
    if as_json:
        echo_json(stamped("trust show", {"store": str(ts.path), "anchor": entry_dict(entry)}))
        return
    for key, value in entry.items():
        if key in ("file_size", "file_sha256"):
            continue
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value) or "-"
        say(f"{key:<20} {value if value not in (None, '') else '-'}")


@trust.command("remove")
@click.argument("ref")
@_json_option
@home_option
@_store_option
def remove_cmd(ref: str, as_json: bool, home: str | None, store: str | None) -> None:
    """Stop trusting one anchor (by fingerprint, prefix, thumbprint or label)."""
    ts = open_store(home, store, check=False)
    entry = ts.remove(ref)
    if as_json:
        echo_json(stamped("trust remove", {"store": str(ts.path), "removed": entry_dict(entry), "count": len(ts)}))
        return
    say(f"Removed: {entry['subject']} ({entry['fingerprint_sha256']})")


@trust.command("export")
@click.option("--format", "fmt", type=click.Choice(["pem", "p7b", "der-dir"]), default="pem", show_default=True,
              help="pem: bundle for Postfix smtp(d)_tls_CAfile / OpenSSL; p7b: PKCS#7 for Windows; "
                   "der-dir: a folder of .cer files for certutil / the MMC.")
@click.option("--out", type=click.Path(), default=None, help="Where to write (pem: default stdout).")
@click.option("--include-public", is_flag=True, help="Include certifi's Mozilla roots too.")
@click.option("--force", is_flag=True, help="Refresh an earlier export in place (der-dir: drop removed anchors).")
@home_option
@_store_option
def export_cmd(fmt: str, out: str | None, include_public: bool, force: bool, home: str | None,
               store: str | None) -> None:
    """Export the anchors for Postfix, OpenSSL or Windows."""
    ts = open_store(home, store)
    if fmt == "p7b" and out is None:
        raise UsageError("--format p7b writes binary data and needs --out FILE.", "Add --out anchors.p7b.")
    result = ts.export(fmt, Path(out) if out else None, include_public=include_public, overwrite=force)
    if isinstance(result, bytes):
        click.echo(result.decode("ascii"), nl=False)
        return
    say(f"Wrote {plural(len(result), 'file')}: {result[0].parent if fmt == 'der-dir' else result[0]}", err=True)


@trust.command("verify")
@click.argument("cert", type=click.Path())
@click.option("--chain", "chain_files", multiple=True, type=click.Path(),
              help="File with intermediates the peer sends (repeatable).")
@click.option("--name", default=None, help="Host-name rule (Postfix verify): the MX host, e.g. mx.fabrikam.com.")
@click.option("--domain", default=None, help="Domain Security rule (Postfix secure): the partner domain.")
@click.option("--purpose", type=click.Choice(["server", "client"]), default="server", show_default=True)
@click.option("--managed-only", is_flag=True, help="Trust only the managed anchors, not certifi's public roots.")
@click.option("--validator", type=click.Choice(["postfix", "exchange"]), default="postfix", show_default=True,
              help="exchange: every CA-issued certificate needs a CRL distribution point and a current CRL, "
                   "fetched over HTTP unless --crl is given (Windows' rule for Domain Security).")
@click.option("--crl", "crl_files", multiple=True, type=click.Path(),
              help="CRL file (repeatable); with --validator exchange these replace downloading.")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds per CRL download.")
@click.option("--at", "at_text", default=None, help="Validate at this time (ISO 8601 with zone), not now.")
@_json_option
@_pfx_option
@home_option
@_store_option
def verify_cmd(cert: str, chain_files: tuple[str, ...], name: str | None, domain: str | None, purpose: str,
               managed_only: bool, validator: str, crl_files: tuple[str, ...], timeout: float, at_text: str | None,
               as_json: bool, pfx_password_file: str | None, home: str | None, store: str | None) -> None:
    """Would we accept CERT? Exit 0 if yes, 1 if not (with every reason), 2 on misuse.

    CERT may hold the whole chain the peer sends (leaf first).
    """
    if name is not None and domain is not None:
        raise UsageError("--name and --domain are mutually exclusive.",
                         "Use --name for the MX host rule or --domain for the Domain Security rule.")
    at = parse_at(at_text) if at_text is not None else None
    certs = _read_certs(cert, pfx_password_file)
    leaf, intermediates = certs[0], certs[1:]
    for f in chain_files:
        intermediates.extend(_read_certs(f, pfx_password_file))
    crls = [load_crl(read_input(f, what="CRL"), source=f) for f in crl_files]
    ts = open_store(home, store)
    anchors = ts.anchor_set(managed_only=managed_only)
    if validator == "exchange" and not crls:
        from certkit.adapters.crlfetch import CrlCache
        from certkit.validation import validate_peer

        result = validate_peer(leaf, intermediates, anchors, crl_source=CrlCache(timeout=timeout).get,
                               purpose="client" if purpose == "client" else "server", validator="exchange",
                               name=name, domain=domain, at=at).result
    else:
        options = VerifyOptions(purpose="client" if purpose == "client" else "server", crls=crls,
                                require_revocation=validator == "exchange")
        result = verify_chain(leaf, intermediates, anchors, name=name, domain=domain, at=at, options=options)
    if as_json:
        data: dict[str, Any] = result.to_dict()
        data["validator"] = validator
        data["managed_only"] = managed_only
        data["certifi_version"] = None if managed_only else certifi_version()
        echo_json(stamped("trust verify", data))
    else:
        what = f"as a TLS {purpose}"
        if result.rule == "host":
            what += f" for host {result.reference}"
        elif result.rule == "domain":
            what += f" for domain {result.reference}"
        click.echo(verdict("ACCEPTED" if result.ok else "REJECTED", result.ok)
                   + printable(f": {leaf.subject.rfc4514_string()} {what}"))
        for i, c in enumerate(result.chain):
            say(f"  {'chain' if i == 0 else '     '} {i}: {c.subject.rfc4514_string()}")
        if result.anchor is not None:
            a = result.anchor
            src = "certifi" if a.origin == "certifi" else f"store{' label ' + a.label if a.label else ''}"
            say(f"  anchor: {a.fingerprint[:16]} ({src})")
        for finding in result.findings:
            click.echo("  " + severity(str(finding.severity)) + printable(f": {finding.code}: {finding.detail}"))
    sys.exit(0 if result.ok else 1)


COMMANDS: list[click.Command] = [trust]
