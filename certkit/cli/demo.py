"""``certkit demo``: the CA walkthrough that ``make demo`` runs, on nothing but a temporary folder.

Each step shows the ``$ certkit ...`` command that does what the demo does next, with paths relative to
the demo's folder and the random secrets in files there: with ``--keep``, they can be pasted from it.
"""

from __future__ import annotations

import secrets
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click
from cryptography import x509

from certkit.adapters.fs import PRIVATE, atomic_write
from certkit.ca import CertificateAuthority, IssuedCertificate
from certkit.clock import Clock, SystemClock
from certkit.core.extensions import san_names
from certkit.core.formats import load_pfx, sha1_thumbprint, sha256_fingerprint
from certkit.core.jsonfacts import serial_hex
from certkit.core.lint import lint_certificate
from certkit.core.text import plural

CRL_URL = "http://pki.contoso.com/contoso.crl"


def _step(n: int, text: str) -> None:
    click.echo()
    click.secho(f"{n}. {text}", bold=True)


@dataclass
class _Walkthrough:
    """The demo's folder, its CA and the files the steps share."""

    folder: Path
    clock: Clock

    def __post_init__(self) -> None:
        self.home = self.folder / "contoso-ca"
        self.out = self.folder / "out"
        self.passphrase_file = self.folder / "ca-passphrase.txt"
        self.pfx_password_file = self.folder / "pfx-password.txt"

    def command(self, *args: str | Path) -> None:
        """Show the certkit command line that does what comes next (paths relative to the folder)."""
        words = [str(a.relative_to(self.folder)) if isinstance(a, Path) else a for a in args]
        click.echo(f"   $ certkit {shlex.join(words)}")

    def secret(self, path: Path) -> bytes:
        """A random secret, written to ``path`` (0600) for the commands shown."""
        value = secrets.token_urlsafe(16).encode()
        atomic_write(path, value + b"\n", mode=PRIVATE)
        return value

    def create_ca(self) -> CertificateAuthority:
        _step(1, "Create Contoso's internal CA (root key encrypted at rest, CRL URL put into every certificate)")
        self.command("ca", "init", "--home", self.home, "--name", "Contoso Transport CA", "--key", "rsa3072",
                     "--crl-url", CRL_URL, "--passphrase-file", self.passphrase_file)
        ca = CertificateAuthority.init(self.home, name="Contoso Transport CA", passphrase=self.secret(
            self.passphrase_file), key_type="rsa3072", crl_url=CRL_URL, clock=self.clock)
        click.echo(f"   root: {ca.root.subject.rfc4514_string()}, valid until {ca.root.not_valid_after_utc:%Y-%m-%d}")
        click.echo(f"   root SHA-256: {sha256_fingerprint(ca.root)}  (read this to the partner on the phone)")
        return ca

    def issue(self, ca: CertificateAuthority) -> tuple[IssuedCertificate, dict[str, Path], bytes]:
        _step(2, "Issue the Edge's transport certificate (CN = FQDN, SAN = FQDN + accepted domain, "
                 "serverAuth + clientAuth, RSA 2048 for Exchange 2010)")
        self.command("ca", "issue", "mail.contoso.com", "--accepted-domain", "contoso.com", "--home", self.home,
                     "--passphrase-file", self.passphrase_file, "--out", self.out, "--pfx", "--pfx-password-file",
                     self.pfx_password_file)
        issued = ca.issue("mail.contoso.com", accepted_domains=["contoso.com"], key_type="rsa2048")
        pfx_password = self.secret(self.pfx_password_file)
        paths = issued.write_to(self.out, pfx_password=pfx_password, pfx_target="legacy")
        ca.record_files(issued.serial, paths)
        cert = issued.certificate
        click.echo(f"   serial {serial_hex(cert.serial_number)}")
        click.echo(f"   names: {', '.join(san_names(cert))}")
        click.echo(f"   thumbprint (as Exchange shows it): {sha1_thumbprint(cert)}")
        for path in paths.values():
            click.echo(f"   wrote {path}")
        return issued, paths, pfx_password

    def check(self, cert: x509.Certificate, pfx: Path, pfx_password: bytes) -> None:
        _step(3, "Check the PFX the way Windows will read it, and lint the certificate for Domain Security")
        _, pfx_cert, _ = load_pfx(pfx.read_bytes(), pfx_password)
        click.echo(f"   PFX (3DES + SHA-1 MAC, importable on Exchange 2010) holds {pfx_cert.subject.rfc4514_string()}"
                   if pfx_cert else "   PFX holds no certificate")
        findings = lint_certificate(cert, at=self.clock.now())
        for f in findings:
            click.echo(f"   {str(f.severity).upper()}: {f.code}: {f.detail}")
        if not findings:
            click.echo("   lint: no problems (both EKUs, RSA 2048, SHA-256, CRL distribution point, no wildcard)")
        click.echo(f"   Exchange: Import-ExchangeCertificate ...; Enable-ExchangeCertificate -Thumbprint "
                   f"{sha1_thumbprint(cert)} -Services SMTP")

    def revoke(self, ca: CertificateAuthority, cert: x509.Certificate) -> None:
        _step(4, "The key leaked: revoke the certificate")
        self.command("ca", "revoke", serial_hex(cert.serial_number), "--reason", "keyCompromise", "--home",
                     self.home, "--passphrase-file", self.passphrase_file)
        rec = ca.revoke(cert.serial_number, reason="keyCompromise")
        click.echo(f"   {rec.common_name} is now {rec.status} ({rec.reason})")

    def publish_crl(self, ca: CertificateAuthority, cert: x509.Certificate) -> None:
        _step(5, "Publish the CRL partners' Edges will fetch from the CDP URL")
        self.command("ca", "crl", "--days", "7", "--home", self.home, "--passphrase-file", self.passphrase_file)
        info = ca.publish_crl(days=7)[0]
        crl = info.der_path.read_bytes()
        click.echo(f"   CRL #{info.number}, next update {info.next_update:%Y-%m-%d %H:%M}Z, {len(crl)} bytes -> "
                   f"{info.der_path}")
        click.echo(f"   copy it to {info.url}: a partner's Exchange now refuses serial "
                   f"{serial_hex(cert.serial_number)} (revoked), and fails every certificate of this CA if the CRL "
                   "is unreachable or lapses (RevocationCheckFailure).")

    def status(self, ca: CertificateAuthority) -> None:
        _step(6, "Status: what needs attention before it takes mail down")
        self.command("ca", "status", "--home", self.home)
        status = ca.status()
        click.echo(f"   {plural(status.certificates, 'certificate')}, {status.revoked} revoked; CRL next update "
                   f"{status.crls[0].next_update:%Y-%m-%d}" if status.crls else "   no CRL")
        for f in status.findings:
            click.echo(f"   {str(f.severity).upper()}: {f.detail}")
        if not status.findings:
            click.echo("   OK: the CA and its CRL are valid; republish the CRL before half its lifetime has passed.")


@click.command("demo")
@click.option("--keep", is_flag=True, help="Keep the temporary folder and print its path.")
def demo(keep: bool) -> None:
    """Walk through the CA life cycle in a temporary folder: create a CA, issue a transport certificate,
    export a PFX for Exchange, revoke the certificate and publish a CRL."""
    walk = _Walkthrough(Path(tempfile.mkdtemp(prefix="certkit-demo-")), SystemClock())
    try:
        click.echo("certkit demo: the certificate life cycle of a Domain Security transport certificate.")
        click.echo(f"Working in {walk.folder} (a throw-away CA home; passphrases are random, in "
                   f"{walk.passphrase_file.name} and {walk.pfx_password_file.name}; the commands shown run from "
                   "there).")
        with walk.create_ca() as ca:
            issued, paths, pfx_password = walk.issue(ca)
            walk.check(issued.certificate, paths["pfx"], pfx_password)
            walk.revoke(ca, issued.certificate)
            walk.publish_crl(ca, issued.certificate)
            walk.status(ca)
        click.echo()
        click.echo("Done. Replace the self-signed Edge certificates with certificates like this one, exchange roots "
                   "with the partner (certkit ca root), and keep the CRL fresh.")
    finally:
        if keep:
            click.echo(f"Kept {walk.folder}")
        else:
            shutil.rmtree(walk.folder, ignore_errors=True)


COMMANDS: list[click.Command] = [demo]
