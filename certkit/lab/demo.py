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
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from certkit.adapters.fs import PRIVATE, atomic_write
from certkit.adapters.transport import ClientIdentity
from certkit.adapters.truststore import TrustStore
from certkit.ca import CertificateAuthority, IssuedCertificate, exchange_selfsigned
from certkit.clock import Clock, SystemClock
from certkit.configgen import RUN_ON_EDGE, exchange_script
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
    #: the certificate (chain) and key files ``certkit lab send`` would be given
    cert_files: tuple[Path, Path] | None = None

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


def exchange_commands(partner: str, fqdn: str, certificate: x509.Certificate, partner_root: x509.Certificate,
                      root_file: str) -> tuple[str, list[str]]:
    """What ``certkit config exchange --target 2010 --partner-root .../ROOT_FILE`` writes for the Edge ``fqdn`` (one
    script, one renderer): the whole script (with its comments), and its command lines for the demo to show, each
    with where it runs (the script's ``# Run on:`` line before it)."""
    script = exchange_script(partner, pfx_path=f"C:\\certkit\\{fqdn}.pfx", certificate=certificate, target="2010",
                             partner_root=partner_root, partner_root_path=f"C:\\certkit\\{root_file}")
    commands: list[str] = []
    where = ""
    for line in script.text.splitlines():
        if line.startswith("# Run on: "):
            where = "    # on the Edge" if line == RUN_ON_EDGE else "    # on a Hub Transport server (EdgeSync)"
        elif line.strip() and not line.startswith("#"):
            commands.append(line + where)
    return script.text, commands


def _config(org: _Org, issued: IssuedCertificate) -> LabConfig:
    assert issued.key is not None
    return LabConfig(issued.certificate, issued.key, issued.intermediates,
                     anchors=org.store.anchor_set(managed_only=True), domain_secure=(org.partner,),
                     personality=Personality.EXCHANGE, maildir=org.maildir, hostname=org.fqdn,
                     command_timeout=30, handshake_timeout=10)


def run_demo(say: Callable[[str], None], *, keep: bool = False, folder: Path | None = None,
             clock: Clock | None = None) -> DemoResult:
    """Run the whole scenario; ``say`` receives each line of the narrative.

    The ``$ certkit ...`` lines it shows are the commands that do what the demo just did, with paths
    relative to the demo's folder (the secrets they need are in files there), so that they can be
    pasted from that folder.
    """
    start = time.monotonic()
    work = folder or Path(tempfile.mkdtemp(prefix="certkit-lab-"))
    result = DemoResult(work)
    contoso = _Org("Contoso", "contoso.com", work / "contoso.com", partner="fabrikam.com")
    fabrikam = _Org("Fabrikam", "fabrikam.com", work / "fabrikam.com", partner="contoso.com")
    try:
        say("certkit lab demo: two organisations, contoso.com and fabrikam.com, want to exchange mail with "
            "Exchange Domain Security (mutual TLS).")
        say(f"Everything runs on this machine, on loopback; the files are in {work} (the commands shown run from "
            "there).")
        with contextlib.ExitStack() as stack:
            _Scenario(say, work, clock or SystemClock(), result, stack, (contoso, fabrikam)).run()
        result.seconds = time.monotonic() - start
        say(f"Done in {result.seconds:.1f} s: "
            f"{'the scenario went as expected' if result.ok else 'something did not go as expected'}.")
        return result
    finally:
        for org in (contoso, fabrikam):
            if org.ca is not None:
                org.ca.close()
        if keep or folder is not None:
            say(f"The files are kept in {work}.")
        else:
            shutil.rmtree(work, ignore_errors=True)


class _Scenario:
    """The demo's steps, in order (:meth:`run`); servers and the CRL publisher live on ``stack``."""

    def __init__(self, say: Callable[[str], None], work: Path, clock: Clock, result: DemoResult,
                 stack: contextlib.ExitStack, orgs: tuple[_Org, _Org]) -> None:
        self.say = say
        self.work = work
        self.clock = clock
        self.result = result
        self.stack = stack
        self.orgs = orgs
        self.contoso, self.fabrikam = orgs
        self.crl_http = stack.enter_context(HttpFiles())

    def run(self) -> None:
        """1. the classic failure, 2. internal CAs and roots exchanged, 3. mail both ways, 4. Exchange scripts."""
        self.self_signed_edges()
        if not self.first_send_fails():
            return
        self.internal_cas()
        self.exchange_roots()
        self.present_ca_certificates()
        self.send_both_ways()
        self.exchange_scripts()

    # --- narration --------------------------------------------------------------------------------
    def step(self, n: int, text: str) -> None:
        self.say("")
        self.say(f"{n}. {text}")

    def indent(self, lines: list[str], pad: str = "   ") -> None:
        for line in lines:
            self.say(pad + line)

    def command(self, *args: str | Path) -> None:
        """Show the certkit command line that does what comes next (paths relative to the demo folder)."""
        words = [str(a.relative_to(self.work)) if isinstance(a, Path) else a for a in args]
        self.say(f"   $ certkit {shlex.join(words)}")

    def partner_of(self, org: _Org) -> _Org:
        return self.fabrikam if org is self.contoso else self.contoso

    # --- the steps --------------------------------------------------------------------------------
    def self_signed_edges(self) -> None:
        self.step(1, "Both Edges use the self-signed certificate New-ExchangeCertificate makes, with Domain "
                     "Security enabled for each other")
        for org in self.orgs:
            org.home.mkdir(parents=True, exist_ok=True)
            org.store.path.mkdir(mode=0o700, exist_ok=True)  # empty: nothing trusted yet (--store must exist)
            issued = exchange_selfsigned(org.fqdn, clock=self.clock)
            issued.write_to(org.home / "selfsigned")
            assert issued.key is not None
            org.identity = ClientIdentity(issued.certificate, issued.key)
            org.cert_files = (org.home / "selfsigned" / f"{org.fqdn}.crt", org.home / "selfsigned" / f"{org.fqdn}.key")
            org.server = self.stack.enter_context(run_in_thread(_config(org, issued), clock=self.clock))
            self.say(f"   {org.name}'s Edge {org.fqdn} listens on 127.0.0.1:{org.port}: self-signed certificate "
                     f"{sha1_thumbprint(issued.certificate)}, domain-secure list: {org.partner}")

    def first_send_fails(self) -> bool:
        """Contoso's first message is refused (454 4.7.5); False if it was delivered after all."""
        self.say("   Contoso sends a message to bob@fabrikam.com:")
        failed = self.result.failed = self.send(self.contoso, self.fabrikam)
        if failed.delivered:
            self.say("   unexpected: the message was delivered")
            return False
        self.say("   It stays in Contoso's queue. Get-Queue | fl shows:")
        self.indent(queue_lines(failed, server="EDGE-CONTOSO"), "      ")
        assert self.fabrikam.server is not None
        refused = self.fabrikam.server.wait_for_session(lambda r: r.rejection is not None)
        if refused is not None:
            self.say("   Fabrikam's Edge logged why:")
            self.say("      " + refused.log_line())
        self.say("   certkit's diagnosis, on Contoso's side:")
        self.indent(diagnosis_lines(failed), "      ")
        self.say("   In plain words: Fabrikam's Edge completed the TLS handshake, then, at MAIL FROM (when it learnt "
                 "that the mail comes from contoso.com, a domain-secure partner), it checked Contoso's certificate. "
                 "That certificate is self-signed and Fabrikam does not trust it, so Fabrikam answered "
                 "'454 4.7.5 Certificate validation failure' and Contoso's Edge wrapped that reply into the "
                 "451 4.4.0 line above. What to do: give each Edge a certificate from a CA, publish that CA's CRL "
                 "where the partner can fetch it, and have the partner trust the CA's root.")
        return True

    def internal_cas(self) -> None:
        self.step(2, "Each organisation creates its internal CA, issues a transport certificate for its Edge, "
                     "publishes its CRL over HTTP, and they exchange roots")
        for org in self.orgs:
            self.internal_ca(org)

    def internal_ca(self, org: _Org) -> None:
        """``ca init``, ``ca issue`` (with a PFX), ``ca crl`` served over HTTP, ``ca root`` for the partner."""
        url = self.crl_http.url(f"{org.domain}.crl")
        passphrase_file, pfx_password_file = org.home / "ca-passphrase.txt", org.home / "pfx-password.txt"
        for secret in (passphrase_file, pfx_password_file):
            atomic_write(secret, secrets.token_urlsafe(16).encode() + b"\n", mode=PRIVATE)
        passphrase, pfx_password = (f.read_bytes().strip() for f in (passphrase_file, pfx_password_file))
        home, certs, root_file = org.home / "ca", org.home / "certs", org.home / f"{org.domain}-root.crt"
        self.command("ca", "init", "--home", home, "--name", f"{org.name} Transport CA", "--key", "rsa2048",
                     "--crl-url", url, "--passphrase-file", passphrase_file)
        ca = org.ca = CertificateAuthority.init(home, name=f"{org.name} Transport CA", passphrase=passphrase,
                                                key_type="rsa2048", crl_url=url, clock=self.clock)
        self.command("ca", "issue", org.fqdn, "--accepted-domain", org.domain, "--home", home, "--passphrase-file",
                     passphrase_file, "--out", certs, "--pfx", "--pfx-password-file", pfx_password_file)
        org.issued = ca.issue(org.fqdn, accepted_domains=[org.domain], key_type="rsa2048")
        ca.record_files(org.issued.serial, org.issued.write_to(certs, pfx_password=pfx_password))
        self.command("ca", "crl", "--home", home, "--passphrase-file", passphrase_file)
        crl = ca.publish_crl()[0]
        self.crl_http.files[f"/{org.domain}.crl"] = crl.der_path
        self.command("ca", "root", "--home", home, "--out", root_file)
        root_file.write_bytes(ca.root_pem())
        self.say(f"   {org.name}: root {ca.root.subject.rfc4514_string()} "
                 f"(SHA-256 {sha256_fingerprint(ca.root)[:23]}...), CRL #{crl.number} at {url}")

    def exchange_roots(self) -> None:
        for org in self.orgs:
            partner = self.partner_of(org)
            assert partner.ca is not None
            root_file = partner.home / f"{partner.domain}-root.crt"
            self.command("trust", "add", root_file, "--store", org.store.path, "--label",
                         f"{partner.name} Transport CA", "--partner", partner.domain)
            org.store.add(partner.ca.root, label=f"{partner.name} Transport CA", partners=[partner.domain],
                          source=str(root_file))

    def present_ca_certificates(self) -> None:
        for org in self.orgs:
            assert org.issued is not None and org.issued.key is not None and org.server is not None
            org.identity = ClientIdentity(org.issued.certificate, org.issued.key, org.issued.intermediates)
            org.cert_files = (org.home / "certs" / f"{org.fqdn}.chain.pem", org.home / "certs" / f"{org.fqdn}.key")
            org.server.reconfigure(_config(org, org.issued))
            self.say(f"   {org.name}'s Edge now presents {org.fqdn} issued by {org.name} Transport CA "
                     f"(thumbprint {sha1_thumbprint(org.issued.certificate)}) and trusts {org.partner}'s root")

    def send_both_ways(self) -> None:
        self.step(3, "Contoso sends again")
        ok = self.result.delivered = self.send(self.contoso, self.fabrikam)
        _report_delivery(ok, self.fabrikam, self.say, self.result)
        self.say("   And the reverse direction, Fabrikam to Contoso:")
        back = self.result.reverse = self.send(self.fabrikam, self.contoso)
        _report_delivery(back, self.contoso, self.say, self.result)

    def exchange_scripts(self) -> None:
        self.step(4, "The same configuration on real Exchange servers (Exchange Management Shell, Exchange 2010)")
        self.say("   certkit config exchange writes the script each Edge runs; its commands (the script explains "
                 "each line in a comment):")
        for org in self.orgs:
            partner = self.partner_of(org)
            assert org.issued is not None and partner.ca is not None
            root_file = f"{partner.domain}-root.crt"
            text, commands = exchange_commands(org.partner, org.fqdn, org.issued.certificate, partner.ca.root,
                                               root_file)
            script_file = org.home / f"enable-domain-security-{org.partner}.ps1"
            script_file.write_text(text)
            self.say("")
            self.command("config", "exchange", "--partner", org.partner, "--cert-pfx",
                         org.home / "certs" / f"{org.fqdn}.pfx", "--pfx-password-file",
                         org.home / "pfx-password.txt", "--target", "2010", "--partner-root",
                         partner.home / root_file, "--out", script_file)
            self.say(f"   # on {org.name}'s Edge {org.fqdn}:")
            self.indent(commands, "     ")
        self.say("")

    def send(self, frm: _Org, to: _Org) -> SendResult:
        """One message from ``frm`` to ``to``'s Edge, as ``certkit lab send`` sends it."""
        assert frm.identity is not None and frm.cert_files is not None
        cert, key = frm.cert_files
        self.command("lab", "send", "--from", f"alice@{frm.domain}", "--to", f"bob@{to.domain}", "--via",
                     f"127.0.0.1:{to.port}", "--cert", cert, "--key", key, "--store", frm.store.path,
                     "--managed-only", "--domain-secure")
        return send_message(f"alice@{frm.domain}", f"bob@{to.domain}", identity=frm.identity,
                            anchors=frm.store.anchor_set(managed_only=True), via=f"127.0.0.1:{to.port}",
                            domain_secure=True, timeout=10, clock=self.clock)


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
