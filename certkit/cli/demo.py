"""``certkit demo``: the CA walkthrough that ``make demo`` runs, on nothing but a temporary folder."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from pathlib import Path

import click

from certkit.ca import CertificateAuthority
from certkit.clock import SystemClock
from certkit.core.formats import load_pfx, sha1_thumbprint, sha256_fingerprint
from certkit.core.issuance import san_names
from certkit.core.lint import lint_certificate


def _step(n: int, text: str) -> None:
    click.echo()
    click.secho(f"{n}. {text}", bold=True)


@click.command("demo")
@click.option("--keep", is_flag=True, help="Keep the temporary folder and print its path.")
def demo(keep: bool) -> None:
    """Walk through the CA life cycle in a temporary folder: create a CA, issue a transport certificate,
    export a PFX for Exchange, revoke the certificate and publish a CRL."""
    folder = Path(tempfile.mkdtemp(prefix="certkit-demo-"))
    clock = SystemClock()
    try:
        home, out = folder / "contoso-ca", folder / "out"
        passphrase = secrets.token_urlsafe(16).encode()
        click.echo("certkit demo: the certificate life cycle of a Domain Security transport certificate.")
        click.echo(f"Working in {folder} (a throw-away CA home; passphrases are random).")

        _step(1, "Create Contoso's internal CA (root key encrypted at rest, CRL URL put into every certificate)")
        click.echo('   $ certkit ca init --name "Contoso Transport CA" --crl-url http://pki.contoso.com/contoso.crl')
        ca = CertificateAuthority.init(home, name="Contoso Transport CA", passphrase=passphrase,
                                       key_type="rsa3072", crl_url="http://pki.contoso.com/contoso.crl", clock=clock)
        click.echo(f"   root: {ca.root.subject.rfc4514_string()}, valid until {ca.root.not_valid_after_utc:%Y-%m-%d}")
        click.echo(f"   root SHA-256: {sha256_fingerprint(ca.root)}  (read this to the partner on the phone)")

        _step(2, "Issue the Edge's transport certificate (CN = FQDN, SAN = FQDN + accepted domain, "
                 "serverAuth + clientAuth, RSA 2048 for Exchange 2010)")
        click.echo("   $ certkit ca issue mail.contoso.com --accepted-domain contoso.com --pfx")
        issued = ca.issue("mail.contoso.com", accepted_domains=["contoso.com"], key_type="rsa2048")
        pfx_password = secrets.token_urlsafe(12).encode()
        paths = issued.write_to(out, pfx_password=pfx_password, pfx_target="legacy")
        ca.record_files(issued.serial, paths)
        cert = issued.certificate
        click.echo(f"   serial {format(cert.serial_number, 'x')}")
        click.echo(f"   names: {', '.join(san_names(cert))}")
        click.echo(f"   thumbprint (as Exchange shows it): {sha1_thumbprint(cert)}")
        for path in paths.values():
            click.echo(f"   wrote {path}")

        _step(3, "Check the PFX the way Windows will read it, and lint the certificate for Domain Security")
        _, pfx_cert, _ = load_pfx(paths["pfx"].read_bytes(), pfx_password)
        click.echo(f"   PFX (3DES + SHA-1 MAC, importable on Exchange 2010) holds {pfx_cert.subject.rfc4514_string()}"
                   if pfx_cert else "   PFX holds no certificate")
        findings = lint_certificate(cert, at=clock.now())
        if findings:
            for f in findings:
                click.echo(f"   {str(f.severity).upper()}: {f.code}: {f.detail}")
        else:
            click.echo("   lint: no problems (both EKUs, RSA 2048, SHA-256, CRL distribution point, no wildcard)")
        click.echo(f"   Exchange: Import-ExchangeCertificate ...; Enable-ExchangeCertificate -Thumbprint "
                   f"{sha1_thumbprint(cert)} -Services SMTP")

        _step(4, "The key leaked: revoke the certificate")
        click.echo(f"   $ certkit ca revoke {format(cert.serial_number, 'x')} --reason keyCompromise")
        rec = ca.revoke(issued.serial, reason="keyCompromise")
        click.echo(f"   {rec.common_name} is now {rec.status} ({rec.reason})")

        _step(5, "Publish the CRL partners' Edges will fetch from the CDP URL")
        click.echo("   $ certkit ca crl --days 7")
        info = ca.publish_crl(days=7)[0]
        crl = info.der_path.read_bytes()
        click.echo(f"   CRL #{info.number}, next update {info.next_update:%Y-%m-%d %H:%M}Z, {len(crl)} bytes -> "
                   f"{info.der_path}")
        click.echo(f"   copy it to {info.url}: a partner's Exchange now refuses serial "
                   f"{format(cert.serial_number, 'x')} (revoked), and fails every certificate of this CA if the CRL "
                   "is unreachable or lapses (RevocationCheckFailure).")

        _step(6, "Status: what needs attention before it takes mail down")
        status = ca.status()
        click.echo(f"   {status.certificates} certificate(s), {status.revoked} revoked; CRL next update "
                   f"{status.crls[0].next_update:%Y-%m-%d}" if status.crls else "   no CRL")
        for f in status.findings:
            click.echo(f"   {str(f.severity).upper()}: {f.detail}")
        if not status.findings:
            click.echo("   OK: the CA and its CRL are valid; republish the CRL before half its lifetime has passed.")
        ca.close()
        click.echo()
        click.echo("Done. Replace the self-signed Edge certificates with certificates like this one, exchange roots "
                   "with the partner (certkit ca root), and keep the CRL fresh.")
    finally:
        if keep:
            click.echo(f"Kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


COMMANDS: list[click.Command] = [demo]
