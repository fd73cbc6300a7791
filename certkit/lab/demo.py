"""The lab demo: contoso.com and fabrikam.com on loopback, from the classic 454 4.7.5 to domain-secured mail.

:func:`run_demo` builds two organisations in a temporary folder (each a home with its trust store,
certificates, CA and Maildir), runs an Edge endpoint (:class:`~certkit.lab.server.LabServer`, exchange
personality) for each on its own loopback port, serves both CRLs over HTTP on loopback, and walks
through the scenario. Everything it says goes through the ``say`` callback (the CLI passes
``click.echo``); nothing here prints.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from certkit.adapters.transport import ClientIdentity
from certkit.adapters.truststore import TrustStore
from certkit.ca import CertificateAuthority, IssuedCertificate, exchange_selfsigned
from certkit.clock import Clock, SystemClock
from certkit.configgen import exchange_script
from certkit.core.formats import sha1_thumbprint, sha256_fingerprint
from certkit.lab.httpfiles import HttpFiles
from certkit.lab.sender import SendResult, diagnosis_lines, queue_lines, send_message
from certkit.lab.server import LabConfig, LabServer, Personality, run_in_thread

__all__ = ["DemoResult", "exchange_commands", "run_demo"]


@dataclass
class _Org:
    name: str          # Contoso
    domain: str        # contoso.com
    home: Path
    partner: str = ""
    server: LabServer | None = None
    identity: ClientIdentity | None = None
    issued: IssuedCertificate | None = None
    ca: CertificateAuthority | None = None

    @property
    def fqdn(self) -> str:
        return f"mail.{self.domain}"

    @property
    def store(self) -> TrustStore:
        return TrustStore(self.home / "trust")

    @property
    def maildir(self) -> Path:
        return self.home / "maildir"

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port


@dataclass
class DemoResult:
    """What the demo saw, for tests: the two sends of step 1 and 3 (and the reverse send)."""

    folder: Path
    failed: SendResult | None = None
    delivered: SendResult | None = None
    reverse: SendResult | None = None
    delivered_files: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """The scenario went as it should: a failure first, then delivery both ways."""
        return (self.failed is not None and not self.failed.delivered and self.delivered is not None
                and self.delivered.delivered and self.reverse is not None and self.reverse.delivered)


def exchange_commands(partner: str, fqdn: str, certificate: x509.Certificate, partner_root: x509.Certificate
                      ) -> tuple[str, list[str]]:
    """What ``certkit config exchange --version 2010`` writes for the Edge ``fqdn`` (one script, one renderer):
    the whole script (with its comments), and its command lines for the demo to show."""
    script = exchange_script(partner, pfx_path=f"C:\\certkit\\{fqdn}.pfx", certificate=certificate, version="2010",
                             partner_root=partner_root, partner_root_path=f"C:\\certkit\\{partner}-root.cer")
    commands = [line + ("    # on a Mailbox/Hub server, not on the Edge" if line == "Test-EdgeSynchronization" else "")
                for line in script.text.splitlines() if line.strip() and not line.startswith("#")]
    return script.text, commands


def _config(org: _Org, issued: IssuedCertificate) -> LabConfig:
    assert issued.key is not None
    return LabConfig(issued.certificate, issued.key, issued.intermediates,
                     anchors=org.store.anchor_set(managed_only=True), domain_secure=(org.partner,),
                     personality=Personality.EXCHANGE, maildir=org.maildir, hostname=org.fqdn,
                     command_timeout=30, handshake_timeout=10)


def run_demo(say: Callable[[str], None], *, keep: bool = False, folder: Path | None = None,
             clock: Clock | None = None) -> DemoResult:
    """Run the whole scenario; ``say`` receives each line of the narrative."""
    start = time.monotonic()
    clock = clock or SystemClock()
    work = folder or Path(tempfile.mkdtemp(prefix="certkit-lab-"))
    result = DemoResult(work)
    contoso = _Org("Contoso", "contoso.com", work / "contoso.com", partner="fabrikam.com")
    fabrikam = _Org("Fabrikam", "fabrikam.com", work / "fabrikam.com", partner="contoso.com")
    orgs = (contoso, fabrikam)

    def step(n: int, text: str) -> None:
        say("")
        say(f"{n}. {text}")

    def indent(lines: list[str], pad: str = "   ") -> None:
        for line in lines:
            say(pad + line)

    def send(frm: _Org, to: _Org) -> SendResult:
        assert frm.identity is not None
        say(f"   $ certkit lab send --from alice@{frm.domain} --to bob@{to.domain} --via 127.0.0.1:{to.port} "
            f"--cert {frm.fqdn}.crt --key {frm.fqdn}.key --store {frm.domain}/trust --domain-secure")
        return send_message(f"alice@{frm.domain}", f"bob@{to.domain}", identity=frm.identity,
                            anchors=frm.store.anchor_set(managed_only=True), via=f"127.0.0.1:{to.port}",
                            domain_secure=True, timeout=10, clock=clock)

    try:
        say("certkit lab demo: two organisations, contoso.com and fabrikam.com, want to exchange mail with "
            "Exchange Domain Security (mutual TLS).")
        say(f"Everything runs on this machine, on loopback; the files are in {work}.")
        with contextlib.ExitStack() as stack:
            crl_http = stack.enter_context(HttpFiles())

            step(1, "Both Edges use the self-signed certificate New-ExchangeCertificate makes, with Domain "
                    "Security enabled for each other")
            for org in orgs:
                org.home.mkdir(parents=True, exist_ok=True)
                issued = exchange_selfsigned(org.fqdn, clock=clock)
                issued.write_to(org.home / "selfsigned")
                assert issued.key is not None
                org.identity = ClientIdentity(issued.certificate, issued.key)
                org.server = stack.enter_context(run_in_thread(_config(org, issued), clock=clock))
                say(f"   {org.name}'s Edge {org.fqdn} listens on 127.0.0.1:{org.port}: self-signed certificate "
                    f"{sha1_thumbprint(issued.certificate)}, domain-secure list: {org.partner}")
            say("   Contoso sends a message to bob@fabrikam.com:")
            failed = result.failed = send(contoso, fabrikam)
            if failed.delivered:
                say("   unexpected: the message was delivered")
                return result
            say("   It stays in Contoso's queue. Get-Queue | fl shows:")
            indent(queue_lines(failed, server="EDGE-CONTOSO"), "      ")
            assert fabrikam.server is not None
            refused = fabrikam.server.wait_for_session(lambda r: r.rejection is not None)
            if refused is not None:
                say("   Fabrikam's Edge logged why:")
                say("      " + refused.log_line())
            say("   certkit's diagnosis, on Contoso's side:")
            indent(diagnosis_lines(failed), "      ")
            say("   In plain words: Fabrikam's Edge completed the TLS handshake, then, at MAIL FROM (when it learnt "
                "that the mail comes from contoso.com, a domain-secure partner), it checked Contoso's certificate. "
                "That certificate is self-signed and Fabrikam does not trust it, so Fabrikam answered "
                "'454 4.7.5 Certificate validation failure' and Contoso's Edge wrapped that reply into the "
                "451 4.4.0 line above. What to do: give each Edge a certificate from a CA, publish that CA's CRL "
                "where the partner can fetch it, and have the partner trust the CA's root.")

            step(2, "Each organisation creates its internal CA, issues a transport certificate for its Edge, "
                    "publishes its CRL over HTTP, and they exchange roots")
            passphrase = secrets.token_urlsafe(16).encode()
            for org in orgs:
                url = f"http://127.0.0.1:{crl_http.port}/{org.domain}.crl"
                say(f'   $ certkit ca init --home {org.domain}/ca --name "{org.name} Transport CA" --crl-url {url}')
                ca = org.ca = CertificateAuthority.init(org.home / "ca", name=f"{org.name} Transport CA",
                                                        passphrase=passphrase, key_type="rsa2048", crl_url=url,
                                                        clock=clock)
                say(f"   $ certkit ca issue {org.fqdn} --accepted-domain {org.domain}")
                org.issued = ca.issue(org.fqdn, accepted_domains=[org.domain], key_type="rsa2048")
                org.issued.write_to(org.home / "certs")
                say("   $ certkit ca crl")
                crl = ca.publish_crl()[0]
                crl_http.files[f"/{org.domain}.crl"] = crl.der_path
                (org.home / f"{org.domain}-root.crt").write_bytes(ca.root_pem())
                say(f"   {org.name}: root {ca.root.subject.rfc4514_string()} "
                    f"(SHA-256 {sha256_fingerprint(ca.root)[:23]}...), CRL #{crl.number} at {url}")
            for org in orgs:
                partner = fabrikam if org is contoso else contoso
                assert partner.ca is not None
                say(f"   $ certkit trust add --home {org.domain} {partner.domain}-root.crt --partner {partner.domain}")
                org.store.add(partner.ca.root, label=f"{partner.name} Transport CA", partners=[partner.domain],
                              source=f"{partner.domain}-root.crt")
            for org in orgs:
                assert org.issued is not None and org.issued.key is not None and org.server is not None
                org.identity = ClientIdentity(org.issued.certificate, org.issued.key,
                                              org.issued.intermediates)
                org.server.reconfigure(_config(org, org.issued))
                say(f"   {org.name}'s Edge now presents {org.fqdn} issued by {org.name} Transport CA "
                    f"(thumbprint {sha1_thumbprint(org.issued.certificate)}) and trusts {org.partner}'s root")

            step(3, "Contoso sends again")
            ok = result.delivered = send(contoso, fabrikam)
            _report_delivery(ok, fabrikam, say, result)
            say("   And the reverse direction, Fabrikam to Contoso:")
            back = result.reverse = send(fabrikam, contoso)
            _report_delivery(back, contoso, say, result)

            step(4, "The same configuration on real Exchange servers (Exchange Management Shell, Exchange 2010)")
            say("   certkit config exchange writes the script each Edge runs; its commands (the script explains "
                "each line in a comment):")
            for org in orgs:
                partner = fabrikam if org is contoso else contoso
                assert org.issued is not None and partner.ca is not None
                text, commands = exchange_commands(org.partner, org.fqdn, org.issued.certificate, partner.ca.root)
                script_file = org.home / f"enable-domain-security-{org.partner}.ps1"
                script_file.write_text(text)
                say("")
                say(f"   $ certkit config exchange --partner {org.partner} --cert-pfx {org.fqdn}.pfx --version 2010 "
                    f"--partner-root {org.partner}-root.crt --out {script_file.relative_to(work)}")
                say(f"   # on {org.name}'s Edge {org.fqdn}:")
                indent(commands, "     ")
            say("")
        result.seconds = time.monotonic() - start
        say(f"Done in {result.seconds:.1f} s: "
            f"{'the scenario went as expected' if result.ok else 'something did not go as expected'}.")
        return result
    finally:
        for org in orgs:
            if org.ca is not None:
                org.ca.close()
        if keep or folder is not None:
            say(f"The files are kept in {work}.")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _report_delivery(sent: SendResult, to: _Org, say: Callable[[str], None], result: DemoResult) -> None:
    if not sent.delivered:
        say("   NOT delivered. Get-Queue | fl shows:")
        for line in queue_lines(sent):
            say("      " + line)
        for line in diagnosis_lines(sent):
            say("      " + line)
        return
    attempt = next(a for a in sent.attempts if a.delivered)
    assert attempt.accepted is not None
    tls = attempt.session.tls
    say(f"   Delivered: {attempt.accepted.text} "
        f"({tls.version if tls else 'no TLS'}, both certificates validated, revocation checked)")
    assert to.server is not None
    record = to.server.wait_for_session(lambda r: r.mail_from == sent.mail_from and bool(r.delivered))
    if record is not None:
        say(f"   {to.name}'s Edge logged: {record.log_line()}")
    if record is not None and record.delivered:
        path = record.delivered[-1]
        result.delivered_files.append(path)
        say(f"   In {to.name}'s Maildir: {path.relative_to(to.home.parent)}")
        text = path.read_bytes().decode("utf-8", "replace")
        for line in text.split("\r\n", 4)[:4]:
            say("      " + line.replace("\t", "    "))
