"""``certkit ca ...``, ``certkit selfsigned``, ``certkit inspect``: the CA as commands."""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from certkit.adapters.fs import PUBLIC, atomic_write, read_input
from certkit.ca import (
    CertificateAuthority,
    DaneHostStatus,
    IssuedCertificate,
    IssueRequest,
    WriteOptions,
    exchange_selfsigned,
)
from certkit.cli.colour import paint_report, severity
from certkit.cli.common import (
    CA_PASSPHRASE_ENV,
    KEY_PASSPHRASE_ENV,
    PFX_PASSWORD_ENV,
    CertkitGroup,
    echo_json,
    home_option,
    read_secret,
    resolve_home,
    say,
)
from certkit.clock import SystemClock
from certkit.core.describe import describe_certificate, describe_crl, describe_csr
from certkit.core.formats import Kind, PfxTarget, detect, load_csr, sha1_thumbprint, sha256_fingerprint
from certkit.core.jsonfacts import certificate_facts
from certkit.core.jsonfacts import serial_hex as canonical_serial
from certkit.core.keys import KeyType
from certkit.core.names import dns_name
from certkit.core.profiles import ProfileName
from certkit.core.text import plural, printable
from certkit.errors import AlreadyExistsError, InputError, PassphraseError, UsageError
from certkit.schemas import stamped

KEY_CHOICES = click.Choice([k.value for k in KeyType], case_sensitive=False)
PROFILE_CHOICES = click.Choice([p.value for p in ProfileName], case_sensitive=False)
#: A file certkit reads: click checks nothing (not even that it is a file or readable), so certkit's own
#: reader answers a folder, a FIFO or a file it may not read with its one line.
INPUT_FILE = click.Path(readable=False)
#: ``--json``: print the command's JSON document (docs/json.md) instead of the text.
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON (docs/json.md).")
ALLOW_MIXED_SCRIPT = click.option(
    "--allow-mixed-script", is_flag=True,
    help="Accept a name that mixes scripts or is written in look-alike letters (e.g. a Cyrillic 'а' in "
         "pаypal.com); only for a name really registered so.")


def _ca_passphrase(file: str | None, *, confirm: bool = False) -> bytes:
    return read_secret(env=CA_PASSPHRASE_ENV, file=file, prompt="CA passphrase", confirm=confirm,
                       what="passphrase")


def _open(home: str | None, passphrase_file: str | None = None, *, unlock: bool = False) -> CertificateAuthority:
    ca = CertificateAuthority.open(resolve_home(home), clock=SystemClock())
    if unlock:
        ca.unlock(_ca_passphrase(passphrase_file))
    return ca


def passphrase_option(f: Any) -> Any:
    return click.option("--passphrase-file", type=INPUT_FILE, default=None,
                        help=f"File with the CA passphrase (else ${CA_PASSPHRASE_ENV}, else a prompt).")(f)


def output_options(f: Any) -> Any:
    for opt in reversed([
        click.option("--out", "out_dir", type=click.Path(file_okay=False), default=".", show_default=True,
                     help="Folder for <fqdn>.crt, .key, .chain.pem (and .pfx)."),
        click.option("--pfx", is_flag=True, help="Also write <fqdn>.pfx for Windows/Exchange."),
        click.option("--pfx-target", type=click.Choice(["legacy", "modern"]), default="legacy", show_default=True,
                     help="legacy: 3DES/SHA-1 (Exchange 2010, Windows Server 2016 and older); modern: AES-256."),
        click.option("--pfx-password-file", type=INPUT_FILE, default=None,
                     help=f"File with the PFX password (else ${PFX_PASSWORD_ENV}, else a prompt)."),
        click.option("--key-passphrase-file", type=INPUT_FILE, default=None,
                     help=f"Encrypt the written key with this passphrase (or set ${KEY_PASSPHRASE_ENV})."),
        click.option("--force", is_flag=True, help="Replace existing files in --out."),
    ]):
        f = opt(f)
    return f


def _write_options(*, out_dir: str, pfx: bool, pfx_target: str, pfx_password_file: str | None,
                   key_passphrase_file: str | None, force: bool, write_key: bool = True, p7b: bool = False
                   ) -> WriteOptions:
    """Every secret the files need, read before anything is signed: a missing password records nothing."""
    key_pass = None
    if write_key and (key_passphrase_file or os.environ.get(KEY_PASSPHRASE_ENV)):
        key_pass = read_secret(env=KEY_PASSPHRASE_ENV, file=key_passphrase_file, prompt="Key passphrase",
                               what="key passphrase", option="--key-passphrase-file")
    pfx_pass = None
    if pfx:
        pfx_pass = read_secret(env=PFX_PASSWORD_ENV, file=pfx_password_file, prompt="PFX password", confirm=True,
                               what="PFX password", option="--pfx-password-file")
    return WriteOptions(Path(out_dir), key_passphrase=key_pass, pfx_password=pfx_pass,
                        pfx_target=PfxTarget(pfx_target), write_key=write_key, p7b=p7b, overwrite=force)


def _report(issued: IssuedCertificate) -> None:
    cert = issued.certificate
    say(f"Issued {issued.name}  serial {canonical_serial(cert.serial_number)}")
    click.echo(f"  valid      {cert.not_valid_before_utc:%Y-%m-%d} .. {cert.not_valid_after_utc:%Y-%m-%d}")
    click.echo(f"  thumbprint {sha1_thumbprint(cert)}  (SHA-1, as Exchange shows it)")
    click.echo(f"  sha256     {sha256_fingerprint(cert)}")
    for path in issued.paths.values():
        say(f"  wrote      {path}")
    _warn(issued)


def _warn(issued: IssuedCertificate, *, named: bool = False) -> None:
    """What the CA said the admin must know (a validity cut back to the CA's end, CSR names left out): stderr."""
    for warning in issued.warnings:
        say(f"  warning    {issued.name + ': ' if named else ''}{warning}", err=True)


@click.group(cls=CertkitGroup)
def ca() -> None:
    """The internal CA: issue, renew, revoke, publish CRLs."""


@ca.command("init")
@click.option("--name", required=True, help='The CA\'s name, e.g. "Contoso Transport CA".')
@click.option("--key", "key_type", type=KEY_CHOICES, default="rsa3072", show_default=True)
@click.option("--days", type=click.IntRange(1, 36500), default=3650, show_default=True, help="Validity of the root.")
@click.option("--crl-url", default=None, help="http:// URL where the CRL will be published (the CDP).")
@click.option("--aia-url", default=None, help="http:// URL of the issuing CA certificate (AIA caIssuers).")
@click.option("--permit-domain", "permit", multiple=True, help="Name-constrain the CA to this domain (repeatable).")
@click.option("--intermediate", is_flag=True, help="Create an issuing intermediate under the root.")
@JSON_OPTION
@home_option
@passphrase_option
def ca_init(name: str, key_type: str, days: int, crl_url: str | None, aia_url: str | None, permit: tuple[str, ...],
            intermediate: bool, as_json: bool, home: str | None, passphrase_file: str | None) -> None:
    """Create a CA in the home folder (root key encrypted with the CA passphrase)."""
    target = resolve_home(home)
    if (target / "ca.db").exists():
        from certkit.errors import AlreadyExistsError

        raise AlreadyExistsError(f"{target} already holds a CA.", "Use it, or choose another --home for a new CA.")
    passphrase = _ca_passphrase(passphrase_file, confirm=True)
    authority = CertificateAuthority.init(target, name=name, passphrase=passphrase, key_type=key_type, days=days,
                                          crl_url=crl_url, aia_url=aia_url, permit_domains=permit,
                                          intermediate=intermediate, clock=SystemClock())
    if as_json:
        echo_json(stamped("ca init", {
            "name": name, "home": str(target.absolute()), "root": certificate_facts(authority.root),
            "issuer": certificate_facts(authority.issuer), "intermediate": intermediate, "crl_url": crl_url,
            "aia_url": aia_url, "permitted_domains": list(authority.permitted_domains)}))
        return
    say(f"Created CA {name!r} in {target}")
    say(f"  root       {authority.root.subject.rfc4514_string()}  valid until "
        f"{authority.root.not_valid_after_utc:%Y-%m-%d}")
    click.echo(f"  thumbprint {sha1_thumbprint(authority.root)}")
    click.echo(f"  sha256     {sha256_fingerprint(authority.root)}")
    if intermediate:
        say(f"  issuing    {authority.issuer.subject.rfc4514_string()}")
    if crl_url:
        say(f"  CRL URL    {crl_url}  (publish with: certkit ca crl, then copy ca.crl there)")
    else:
        click.echo("  warning    no --crl-url: Exchange cannot check revocation of these certificates and "
                   "Domain Security will fail (RevocationCheckFailure).")
    say(f"Give partners the root: certkit ca root --home {target} --out root.crt")


def _read_names_file(path: str, *, allow_mixed_script: bool = False) -> list[tuple[str, tuple[str, ...]]]:
    data = read_input(path, what="names file", limit=8 * 1024 * 1024).decode("utf-8", "replace")
    out = []
    for n, line in enumerate(data.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = re.split(r"[\s,]+", line)
        for part in parts:
            try:
                dns_name(part, allow_mixed_script=allow_mixed_script)
            except InputError as exc:
                raise InputError(f"{path}:{n}: {exc.message}", exc.hint) from None
        out.append((parts[0], tuple(parts[1:])))
    if not out:
        raise InputError(f"{path} names no host.", "Write one FQDN per line.")
    return out


@ca.command("issue")
@click.argument("fqdn", required=False)
@click.option("--accepted-domain", "domains", multiple=True, help="Accepted domain to put in the SAN (repeatable).")
@click.option("--san", "sans", multiple=True, help="Extra SAN: DNS:name or IP:address (repeatable).")
@click.option("--profile", type=PROFILE_CHOICES, default="transport", show_default=True)
@click.option("--key", "key_type", type=KEY_CHOICES, default="rsa2048", show_default=True)
@click.option("--days", type=click.IntRange(1, 36500), default=397, show_default=True)
@click.option("--from", "from_file", type=INPUT_FILE, default=None,
              help="Issue for every line of FILE: 'fqdn [accepted-domain ...]'.")
@ALLOW_MIXED_SCRIPT
@output_options
@JSON_OPTION
@home_option
@passphrase_option
def ca_issue(fqdn: str | None, domains: tuple[str, ...], sans: tuple[str, ...], profile: str, key_type: str,
             days: int, from_file: str | None, allow_mixed_script: bool, out_dir: str, pfx: bool, pfx_target: str,
             pfx_password_file: str | None, key_passphrase_file: str | None, force: bool, as_json: bool,
             home: str | None, passphrase_file: str | None) -> None:
    """Issue a transport certificate for FQDN (CN = FQDN, SAN = FQDN + accepted domains, both EKUs).

    A validity that would outlive the CA is cut back to the CA's end, with a warning.
    """
    if (fqdn is None) == (from_file is None):
        raise InputError("Give either an FQDN or --from FILE.", "e.g. certkit ca issue mail.contoso.com")
    if from_file:
        lines = _read_names_file(from_file, allow_mixed_script=allow_mixed_script)
        requests = [IssueRequest(name, extra + domains, sans, profile, key_type, days, allow_mixed_script)
                    for name, extra in lines]
    else:
        assert fqdn is not None
        requests = [IssueRequest(fqdn, domains, sans, profile, key_type, days, allow_mixed_script)]
    write = _write_options(out_dir=out_dir, pfx=pfx, pfx_target=pfx_target, pfx_password_file=pfx_password_file,
                           key_passphrase_file=key_passphrase_file, force=force)
    authority = _open(home, passphrase_file, unlock=True)
    issued = authority.issue_many(requests, write=write)
    if as_json:
        echo_json(stamped("ca issue", {"certificates": [item.to_dict() for item in issued]}))
        return
    if len(issued) == 1:
        _report(issued[0])
        return
    click.echo("NAME\tSERIAL\tSHA-1 THUMBPRINT\tSHA-256")
    for item in issued:
        fields = (item.name, canonical_serial(item.serial), sha1_thumbprint(item.certificate),
                  sha256_fingerprint(item.certificate))
        click.echo("\t".join(printable(f) for f in fields))  # each field escaped: the tabs stay columns
    say(f"Issued {len(issued)} certificates into {out_dir}", err=True)
    for item in issued:
        _warn(item, named=True)


@ca.command("sign")
@click.argument("csr_file", type=INPUT_FILE)
@click.option("--profile", type=PROFILE_CHOICES, default="transport", show_default=True)
@click.option("--days", type=click.IntRange(1, 36500), default=397, show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=".", show_default=True)
@click.option("--force", is_flag=True, help="Replace existing files in --out.")
@click.option("--strict-sans", is_flag=True,
              help="Refuse a request that asks for names the profile does not carry (e-mail, URI, ...) instead of "
                   "issuing without them.")
@ALLOW_MIXED_SCRIPT
@JSON_OPTION
@home_option
@passphrase_option
def ca_sign(csr_file: str, profile: str, days: int, out_dir: str, force: bool, strict_sans: bool,
            allow_mixed_script: bool, as_json: bool, home: str | None, passphrase_file: str | None) -> None:
    """Sign an external PKCS#10 request (PEM, Base64 or DER, e.g. from New-ExchangeCertificate -GenerateRequest).

    The profile decides the extensions, not the request. Writes <fqdn>.crt, <fqdn>.chain.pem and <fqdn>.p7b
    (complete the pending request on Exchange with Import-ExchangeCertificate). SAN entries the profile does
    not carry (e-mail, URI) are left out with a warning, or refused with --strict-sans.
    """
    csr = load_csr(read_input(csr_file, what="certificate request"), source=csr_file)
    authority = _open(home, passphrase_file, unlock=True)
    issued = authority.sign_csr(csr, profile=profile, days=days,
                                write=WriteOptions(Path(out_dir), write_key=False, p7b=True, overwrite=force),
                                allow_mixed_script=allow_mixed_script, refuse_dropped=strict_sans)
    if as_json:
        echo_json(stamped("ca sign", {"certificate": issued.to_dict()}))
        return
    _report(issued)


@ca.command("root")
@click.option("--der", is_flag=True, help="DER instead of PEM.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None, help="Write to FILE, not stdout.")
@click.option("--force", is_flag=True, help="Replace --out FILE if it exists.")
@home_option
def ca_root(der: bool, out_file: str | None, force: bool, home: str | None) -> None:
    """The CA's root certificate: the file a partner imports into their trusted roots."""
    authority = _open(home)
    data = authority.root_der() if der or (out_file or "").lower().endswith((".cer", ".der")) else authority.root_pem()
    if out_file:
        atomic_write(out_file, data, mode=PUBLIC, overwrite=force)
        say(f"Wrote {out_file}  (SHA-256 {sha256_fingerprint(authority.root)})", err=True)
    elif der and sys.stdout.isatty():
        raise InputError("Refusing to write DER to a terminal.", "Use --out FILE or redirect stdout.")
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


def _parse_period(text: str) -> dt.timedelta:
    m = re.fullmatch(r"\s*(\d+)\s*([dhw]?)\s*", text)
    if not m:
        raise InputError(f"{text!r} is not a period.", "Write e.g. 30d, 12h or 2w.")
    n, unit = int(m.group(1)), m.group(2) or "d"
    return {"d": dt.timedelta(days=n), "h": dt.timedelta(hours=n), "w": dt.timedelta(weeks=n)}[unit]


@ca.command("list")
@click.option("--expiring", default=None, help="Only valid certificates expiring within PERIOD (30d, 12h, 2w).")
@click.option("--revoked", is_flag=True, help="Only revoked certificates.")
@JSON_OPTION
@home_option
def ca_list(expiring: str | None, revoked: bool, as_json: bool, home: str | None) -> None:
    """Certificates this CA issued."""
    if expiring and revoked:
        raise InputError("--expiring lists valid certificates and --revoked revoked ones; give one of them.",
                         "Use certkit ca list --expiring 30d, or certkit ca list --revoked.")
    authority = _open(home)
    if expiring:
        records = authority.records(expiring_within=_parse_period(expiring))
    else:
        records = authority.records(revoked=True if revoked else None)
    if as_json:
        echo_json(stamped("ca list", {"certificates": [r.to_dict() for r in records]}))
        return
    if not records:
        click.echo("No certificates.")
        return
    click.echo(f"{'SERIAL':<40} {'STATUS':<8} {'NOT AFTER':<10} {'PROFILE':<9} NAME")
    for r in records:
        say(f"{canonical_serial(r.serial):<40} {r.status:<8} {r.not_after:%Y-%m-%d} {r.profile:<9} {r.common_name}")


@ca.command("show")
@click.argument("ref")
@JSON_OPTION
@home_option
def ca_show(ref: str, as_json: bool, home: str | None) -> None:
    """One certificate, by serial or name."""
    authority = _open(home)
    rec = authority.get(ref)
    info = rec.to_dict()
    info["certificate"] = describe_certificate(rec.certificate, at=authority.clock.now())
    if as_json:
        echo_json(stamped("ca show", info))
        return
    # The text uses the JSON document's names and formats (docs/json.md).
    text = {**info, "thumbprint_sha1": rec.sha1, "fingerprint_sha256": rec.sha256}
    for key in ("serial", "common_name", "profile", "status", "not_before", "not_after", "issued_at",
                "thumbprint_sha1", "fingerprint_sha256"):
        say(f"{key:<20} {text[key]}")
    say(f"{'names':<20} {', '.join(rec.names)}")
    if rec.status == "revoked":
        say(f"{'revoked_at':<20} {info['revoked_at']}  ({info['reason']})")
    for key in ("renewed_from", "renewed_by"):
        if text[key]:
            click.echo(f"{key:<20} {text[key]}")
    for kind, path in rec.files.items():
        say(f"{'file ' + kind:<20} {path}")


@ca.command("renew")
@click.argument("ref")
@click.option("--rekey", is_flag=True, help="Generate a new key (default: keep the key).")
@click.option("--ignore-dane", is_flag=True,
              help="With --rekey: change the key although the host has a DANE rollover state (breaks DANE "
                   "senders until the new TLSA record is in every resolver).")
@click.option("--days", type=click.IntRange(1, 36500), default=None,
              help="Validity (default: that of the old certificate).")
@output_options
@JSON_OPTION
@home_option
@passphrase_option
def ca_renew(ref: str, rekey: bool, ignore_dane: bool, days: int | None, out_dir: str, pfx: bool, pfx_target: str,
             pfx_password_file: str | None, key_passphrase_file: str | None, force: bool, as_json: bool,
             home: str | None, passphrase_file: str | None) -> None:
    """A new certificate for the same names (same key unless --rekey), linked to the old one.

    Without --rekey no key file is written (keep using the old one); a PFX then needs the old key, so --pfx
    requires --rekey. --rekey is refused (exit 2) for a certificate naming a host with a DANE rollover state
    (certkit dane rollover): roll its key with certkit dane rollover next HOST, or pass --ignore-dane.
    """
    if pfx and not rekey:
        raise InputError("A PFX needs the private key, which certkit does not keep.",
                         "Use --rekey, or build the PFX where the key lives.")
    write = _write_options(out_dir=out_dir, pfx=pfx, pfx_target=pfx_target, pfx_password_file=pfx_password_file,
                           key_passphrase_file=key_passphrase_file, force=force, write_key=rekey)
    authority = _open(home)
    old = authority.get(ref)
    if rekey and not ignore_dane:
        _refuse_dane_rekey(authority, old.common_name, old.names)
    authority.unlock(_ca_passphrase(passphrase_file))
    issued = authority.renew(ref, rekey=rekey, days=days, write=write)
    if as_json:
        echo_json(stamped("ca renew", {"certificate": issued.to_dict(), "renews": canonical_serial(old.serial),
                                       "rekey": rekey}))
        return
    _report(issued)
    click.echo(f"  renews     {canonical_serial(old.serial)} ({'new key' if rekey else 'same key'})")
    click.echo("  note       a Send connector that pins TlsCertificateName needs the new issuer/subject string; "
               "Enable-ExchangeCertificate the new thumbprint.")


def _refuse_dane_rekey(authority: CertificateAuthority, common_name: str, names: Sequence[str]) -> None:
    """A new key for a host whose TLSA records certkit manages breaks DANE senders: refuse (exit 2).

    Only the rollover state in the CA home is known without DNS; a key published in TLSA by hand is not."""
    mine = {n.strip().rstrip(".").lower() for n in (common_name, *names)}
    for host in authority.dane_status():
        if host.host not in mine:
            continue
        h = host.host
        if host.phase == "next-published":
            why, hint = (f"a DANE key rollover of {h} is under way (next key published)",
                         f"Put the published next key into service with certkit dane rollover switch {h}")
        elif host.phase == "switched":
            why, hint = (f"the DANE rollover of {h} has just switched (the old record is still published)",
                         f"Finish it with certkit dane rollover retire {h}, then certkit dane rollover next {h}")
        else:
            why, hint = (f"{h} has a DANE rollover state: its key is published in TLSA",
                         f"Roll the key with certkit dane rollover next {h} (then switch and retire)")
        raise UsageError(f"Not changing the key: {why}, and a new key fails DANE senders until its TLSA record is "
                         "in every resolver.", f"{hint}, or pass --ignore-dane to rekey anyway.")


@ca.command("revoke")
@click.argument("ref")
@click.option("--reason", default="unspecified", show_default=True,
              help="keyCompromise, superseded, cessationOfOperation, affiliationChanged, certificateHold, ...")
@JSON_OPTION
@home_option
@passphrase_option
def ca_revoke(ref: str, reason: str, as_json: bool, home: str | None, passphrase_file: str | None) -> None:
    """Revoke a certificate; it is listed on the next CRL (certkit ca crl)."""
    authority = _open(home, passphrase_file, unlock=True)
    rec = authority.revoke(ref, reason=reason)
    if as_json:
        echo_json(stamped("ca revoke", {"certificate": rec.to_dict()}))
        return
    say(f"Revoked {rec.common_name} (serial {canonical_serial(rec.serial)}), reason {rec.reason}.")
    click.echo("Publish the CRL now so partners see it: certkit ca crl")


@ca.command("crl")
@click.option("--days", type=click.IntRange(1, 366), default=7, show_default=True, help="Until nextUpdate.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None,
              help="Also write a copy (DER if FILE ends in .crl, else PEM).")
@click.option("--force", is_flag=True, help="Replace --out FILE if it exists (e.g. the copy on the CDP server).")
@JSON_OPTION
@home_option
@passphrase_option
def ca_crl(days: int, out_file: str | None, force: bool, as_json: bool, home: str | None,
           passphrase_file: str | None) -> None:
    """Sign and publish fresh CRLs into the home (ca.crl is what the CDP URL must serve)."""
    if out_file and not force and Path(out_file).exists():
        raise AlreadyExistsError(f"{out_file} already exists and certkit does not overwrite files.",
                                 "Pass --force to replace it (the usual case when refreshing the published copy).")
    authority = _open(home, passphrase_file, unlock=True)
    infos = authority.publish_crl(days=days)
    for info in [] if as_json else infos:
        say(f"CRL #{info.number} ({info.issuer}) next update {info.next_update:%Y-%m-%d %H:%M}Z -> "
            f"{info.der_path}" + (f"  (serve at {info.url})" if info.url else ""))
    if out_file:
        main = infos[0]
        data = main.der_path.read_bytes() if out_file.lower().endswith(".crl") else main.pem_path.read_bytes()
        atomic_write(out_file, data, overwrite=force)
        if not as_json:
            say(f"Wrote {out_file}")
    if as_json:
        echo_json(stamped("ca crl", {"crls": [info.to_dict() for info in infos], "copy": out_file}))


@ca.command("status")
@JSON_OPTION
@click.option("--expiring", default="30d", show_default=True, help="Warn about certificates expiring within PERIOD.")
@home_option
def ca_status(as_json: bool, expiring: str, home: str | None) -> None:
    """CA validity, certificates expiring soon, and the CRL's nextUpdate. Exit 1 when something has lapsed."""
    authority = _open(home)
    st = authority.status(warn_within=_parse_period(expiring))
    now = authority.clock.now()
    if as_json:
        echo_json(stamped("ca status", st.to_dict()))
    else:
        say(f"CA {st.name!r}: root valid until {st.root_not_after:%Y-%m-%d}, "
            f"{st.certificates} certificates ({st.revoked} revoked)")
        for c in st.crls:
            say(f"  CRL #{c.number} ({c.issuer}) next update {c.next_update:%Y-%m-%d %H:%M}Z")
        if not st.crls:
            click.echo("  no CRL published yet")
        for d in st.dane:
            say(_dane_line(d, now))
            for line in d.records:
                say(f"    {line}")
            for note in d.notes:
                say(f"    note: {note}")
        for f in st.findings:
            click.echo("  " + severity(f"{str(f.severity).upper():<7}")
                       + printable(f" {f.detail}  -> {f.entry.remedy}"))
        for leftover in st.leftovers:
            click.echo("  " + severity(f"{'WARNING':<7}") + printable(f" leftover: {leftover}"))
        if not st.findings and not st.leftovers:
            click.echo("  OK")
    sys.exit(0 if st.ok else 1)


def _dane_line(d: DaneHostStatus, now: dt.datetime) -> str:
    """``ca status``: one line per host with a DANE rollover state; its records follow."""
    if d.error is not None:
        return f"  DANE {d.host}: state unreadable: {d.error}"
    head = f"  DANE {d.host} port {d.port}: {d.phase}"
    if d.next_step is None or d.next_step_at is None:
        return f"{head}, nothing pending; TLSA records to have published:"
    at = f"{d.next_step_at:%Y-%m-%d %H:%M}Z"
    if d.projected:
        when = (f"not before {at} (if DNS shows the next record now; certkit dane rollover status {d.host} "
                "looks)")
    else:
        when = f"from {at}" + (" (due now)" if d.next_step_at <= now else "")
    return f"{head}, {d.next_step} {when}; TLSA records to have published:"


@click.command("selfsigned")
@click.argument("fqdn")
@click.option("--days", type=click.IntRange(1, 36500), default=5 * 365, show_default=True)
@ALLOW_MIXED_SCRIPT
@output_options
@JSON_OPTION
def selfsigned(fqdn: str, days: int, allow_mixed_script: bool, out_dir: str, pfx: bool, pfx_target: str,
               pfx_password_file: str | None, key_passphrase_file: str | None, force: bool, as_json: bool) -> None:
    """What New-ExchangeCertificate makes by default: self-signed, CN = short name, SAN = short name + FQDN,
    RSA 2048, five years, serverAuth + clientAuth. For reproducing the self-signed failure in a lab."""
    write = _write_options(out_dir=out_dir, pfx=pfx, pfx_target=pfx_target, pfx_password_file=pfx_password_file,
                           key_passphrase_file=key_passphrase_file, force=force)
    issued = exchange_selfsigned(fqdn, days=days, clock=SystemClock(), allow_mixed_script=allow_mixed_script)
    paths = issued.write_to(write.out_dir, overwrite=write.overwrite, key_passphrase=write.key_passphrase,
                            pfx_password=write.pfx_password, pfx_target=write.pfx_target)
    if as_json:
        echo_json(stamped("selfsigned", {"certificate": replace(issued, paths=paths).to_dict()}))
        return
    _report(replace(issued, paths=paths))


@click.command("inspect")
@click.argument("file", type=INPUT_FILE)
@click.option("--password-file", type=INPUT_FILE, default=None,
              help=f"PFX password file (else ${PFX_PASSWORD_ENV}, else a prompt).")
@JSON_OPTION
def inspect(file: str, password_file: str | None, as_json: bool) -> None:
    """Read any certificate, chain, CSR, CRL or PFX and lint it for Domain Security. Exit 1 on lint errors."""
    data = read_input(file, what="certificate file")
    try:
        loaded = detect(data, source=file)
    except PassphraseError:
        password = read_secret(env=PFX_PASSWORD_ENV, file=password_file, prompt="PFX password", what="PFX password",
                               option="--password-file")
        loaded = detect(data, source=file, password=password)
    now = SystemClock().now()
    certs = []
    for i, cert in enumerate(loaded.certificates):
        role = "certificate" if i == 0 else "chain certificate"
        certs.append(describe_certificate(cert, at=now, role=role, lint=(i == 0)))
    context: dict[str, Any] = {
        "source": file,
        "kind": {Kind.CERTIFICATES: plural(len(certs), "certificate"), Kind.PFX: "PFX (PKCS#12)",
                 Kind.CSR: "certificate request (PKCS#10)", Kind.CRL: "certificate revocation list",
                 Kind.PRIVATE_KEY: "private key (not shown)"}[loaded.kind],
        "certificates": certs,
        "csr": describe_csr(loaded.csr) if loaded.csr is not None else None,
        "crl": describe_crl(loaded.crl, at=now) if loaded.crl is not None else None,
    }
    if as_json:
        echo_json(stamped("inspect", context))
    else:
        from certkit.adapters.render import render  # jinja2 costs 25 ms to import: only when rendering

        click.echo(paint_report(render("inspect.txt.j2", **context).rstrip("\n")))
    errors = [f for c in certs for f in (c["lint"] or []) if f["severity"] == "error"]
    sys.exit(1 if errors else 0)


COMMANDS: list[click.Command] = [ca, selfsigned, inspect]
