"""``certkit config exchange|postfix|partner-kit``: hand over the configuration that was checked."""

from __future__ import annotations

import ntpath
import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
from cryptography import x509

from certkit.adapters.fs import PUBLIC, atomic_write, atomic_write_many
from certkit.adapters.inputs import read_input
from certkit.cli.colour import severity
from certkit.cli.common import (
    PFX_PASSWORD_ENV,
    CertkitGroup,
    echo_json,
    home_option,
    open_store,
    read_secret,
    resolve_home,
    say,
)
from certkit.clock import SystemClock
from certkit.configgen import (
    DEFAULT_EXCHANGE_TARGET,
    DEFAULT_RECEIVE_CONNECTOR,
    DEFAULT_SEND_CONNECTOR,
    DEFAULT_SERVER_FOLDER,
    EXCHANGE_TARGETS,
    check_script_target,
    exchange_script,
    partner_kit,
    postfix_config,
    postfix_inbound,
)
from certkit.core.formats import load_certificates, load_pfx
from certkit.core.jsonfacts import certificate_facts
from certkit.core.lint import is_self_signed, lint_certificate
from certkit.core.names import dns_name
from certkit.core.text import printable
from certkit.core.trust import is_ca
from certkit.errors import InputError
from certkit.schemas import stamped

__all__ = ["COMMANDS"]


def _write_or_print(text: str, out: str | None, force: bool, *, as_json: bool = False) -> None:
    if out is None:
        if not as_json:
            click.echo(text, nl=False)
    else:
        atomic_write(out, text.encode("utf-8"), overwrite=force)
        if not as_json:
            say(f"Wrote {out}", err=True)


def _json_option(f: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON (docs/json.md): what was produced, with the files written.")(f)


def _files(folder: Path | None, names: Iterable[str]) -> list[dict[str, str | None]]:
    """The ``files`` of a config document: each file's name and, when written, its absolute path."""
    return [{"name": n, "path": str((folder / n).absolute()) if folder is not None else None} for n in sorted(names)]


@click.group("config", cls=CertkitGroup)
def config_group() -> None:
    """The configuration for the MTA at hand: Exchange, Postfix, and the kit for the partner."""


@config_group.command("exchange")
@click.option("--partner", required=True, help="The partner's mail domain (fabrikam.com).")
@click.option("--cert-pfx", "pfx_file", type=click.Path(), default=None,
              help="Our transport certificate with its key (PFX); read here only for its thumbprint. Needed for "
                   "2010 and 2016; Exchange Online uses Microsoft's certificate.")
@click.option("--pfx-password-file", type=click.Path(), default=None,
              help=f"File whose first line is the PFX password (else ${PFX_PASSWORD_ENV}, else a prompt).")
@click.option("--target", type=click.Choice(EXCHANGE_TARGETS), default=DEFAULT_EXCHANGE_TARGET, show_default=True,
              help="Which Exchange: 2010, 2016 (2013 to Subscription Edition: adds TlsCertificateName), "
                   "online (Exchange Online: Partner inbound and outbound connectors).")
@click.option("--send-connector", default=DEFAULT_SEND_CONNECTOR, show_default=True)
@click.option("--receive-connector", default=DEFAULT_RECEIVE_CONNECTOR, show_default=True)
@click.option("--server-path", default=None,
              help=f"Where the PFX will be on the Edge (default: {DEFAULT_SERVER_FOLDER}\\NAME); the partner's "
                   "root goes in the same folder, under the name you gave it.")
@click.option("--partner-root", type=click.Path(), default=None,
              help="The partner's root certificate, to import into Cert:\\LocalMachine\\Root (without it the "
                   "import step is written with a placeholder path to fill in). With --target online: only "
                   "checked to be a public CA, as Exchange Online requires.")
@click.option("--certificate-domain", default=None,
              help="--target online: the domain the partner's certificate names (TlsSenderCertificateName and "
                   "TlsDomain; default *.PARTNER, the domain and every host within it).")
@click.option("--no-edge-subscription", is_flag=True,
              help="No EdgeSync subscription: every command on the Internet-facing server, -AuthMechanism Tls alone "
                   "(with one, ExchangeServer is kept for Hub-to-Edge authentication) and no Test-EdgeSynchronization.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the script here (else stdout).")
@click.option("--force", is_flag=True, help="Overwrite --out.")
@_json_option
def exchange_cmd(partner: str, pfx_file: str | None, pfx_password_file: str | None, target: str,
                 send_connector: str, receive_connector: str, server_path: str | None, partner_root: str | None,
                 certificate_domain: str | None, no_edge_subscription: bool, out: str | None, force: bool,
                 as_json: bool) -> None:
    """A script for certificate-based mail flow with PARTNER: Domain Security on Exchange 2010 to SE, Partner
    connectors on Exchange Online. Each command says where it runs."""
    check_script_target(target)  # before the PFX password is asked for
    online = target == "online"
    if online and pfx_file is not None:
        raise InputError("--cert-pfx is not used with --target online: Exchange Online presents Microsoft's "
                         "certificate.", "Leave --cert-pfx out.")
    if not online and pfx_file is None:
        raise InputError(f"--target {target} needs our transport certificate.", "Give --cert-pfx FILE.")
    root = _partner_root(partner_root, online=online)
    cert = None
    lint: list[Any] = []
    where = None
    if pfx_file is not None:
        cert = _pfx_certificate(pfx_file, pfx_password_file)
        where = server_path or f"{DEFAULT_SERVER_FOLDER}\\{ntpath.basename(Path(pfx_file).name)}"
        # What the partner's Edge will judge: warn now rather than after the change window.
        lint = lint_certificate(cert, at=SystemClock().now(), exchange2010=target == "2010")
        for finding in lint:
            click.echo(severity("warning", err=True) + printable(
                f": {pfx_file}: {finding.code}: {finding.detail} Fix: {finding.entry.remedy}"), err=True)
    root_path = None
    if partner_root and where is not None:
        # The file name the user gave, in the folder of the PFX: what the copy step lists.
        root_path = ntpath.join(ntpath.dirname(where) or DEFAULT_SERVER_FOLDER, Path(partner_root).name)
    script = exchange_script(partner, pfx_path=where, certificate=cert, target=target,
                             send_connector=send_connector, receive_connector=receive_connector,
                             partner_root=root, partner_root_path=root_path,
                             edge_subscription=not no_edge_subscription, certificate_domain=certificate_domain)
    _write_or_print(script.text, out, force, as_json=as_json)
    if as_json:
        echo_json(stamped("config exchange", {
            "partner": partner, "target": target, "certificate": certificate_facts(cert) if cert else None,
            "pfx_server_path": where, "partner_root": certificate_facts(root) if root is not None else None,
            "send_connector": None if online else send_connector,
            "receive_connector": None if online else receive_connector,
            "edge_subscription": not no_edge_subscription, "findings": [f.to_dict() for f in lint],
            "files": [{"path": p, "what": w} for p, w in script.files],
            "certificate_domain": script.certificate_domain,
            "script": {"path": str(Path(out).absolute()) if out else None, "text": None if out else script.text}}))


def _pfx_certificate(pfx_file: str, pfx_password_file: str | None) -> x509.Certificate:
    data = read_input(pfx_file, what="PFX")
    password = read_secret(env=PFX_PASSWORD_ENV, file=pfx_password_file, prompt="PFX password",
                           what="PFX password", option="--pfx-password-file")
    _key, cert, _extra = load_pfx(data, password, source=pfx_file)
    if cert is None:
        raise InputError(f"{pfx_file} holds no certificate.", "Export the PFX again with its certificate.")
    return cert


def _partner_root(partner_root: str | None, *, online: bool) -> x509.Certificate | None:
    """The partner's root (``--partner-root``), refused when it is not a root; for Exchange Online, when it is not
    one of the public CAs (Exchange Online has no store for a private root)."""
    if not partner_root:
        return None
    root = load_certificates(read_input(partner_root, what="partner root"), source=partner_root)[0]
    if not is_ca(root) and not is_self_signed(root):
        raise InputError(f"{partner_root} is {root.subject.rfc4514_string()}, a certificate issued by "
                         f"{root.issuer.rfc4514_string()}, not a root.",
                         "Give the partner's root CA certificate (or, for a self-signed Edge, that certificate).")
    if online:
        from certkit.adapters.roots import public_roots

        if public_roots().find(root) is None:
            raise InputError(f"{partner_root} ({root.subject.rfc4514_string()}) is not a public CA: Exchange Online "
                             "trusts only certificates from public CAs and cannot import a private root.",
                             "Ask the partner for a certificate from a public CA, or use Exchange Server "
                             "(--target 2016), which can trust their root.")
    return root


@config_group.command("postfix")
@click.option("--partner", required=True, help="The partner's mail domain (fabrikam.com).")
@click.option("--cert", "cert_file", type=click.Path(), default=None,
              help="Our certificate as Postfix will read it (leaf first, chain after).")
@click.option("--key", "key_file", type=click.Path(), default=None, help="Its key, as Postfix reads it.")
@click.option("--store", type=click.Path(file_okay=False), default=None, help="Trust store (default: <home>/trust).")
@click.option("--include-public", is_flag=True, help="Also trust certifi's public roots (default: managed only).")
@click.option("--config-dir", default="/etc/postfix", show_default=True, help="Postfix's configuration folder.")
@click.option("--listen", default="2525", show_default=True,
              help="master.cf service of the dedicated partner listener (port or address:port).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Write main.cf.certkit, tls_policy, master.cf.certkit and certkit-ca.pem here (else print).")
@click.option("--force", is_flag=True, help="Overwrite files in --out.")
@click.option("--dane", is_flag=True,
              help="Outbound: opportunistic DANE (needs a local DNSSEC-validating resolver). Inbound: the TLSA "
                   "records of our MX from --cert, in tlsa.zone.")
@click.option("--mx", default=None, help="With --dane: our MX host name, the TLSA owner (default: --cert's CN).")
@click.option("--no-inbound", is_flag=True,
              help="With --out: leave out inbound enforcement (main.cf.inbound, master.cf.inbound, "
                   "certkit-partners.json).")
@click.option("--policy-command", default=None,
              help="How Postfix runs certkit for the policy service (default: this certkit's absolute path).")
@click.option("--policy-user", default="nobody", show_default=True,
              help="The unprivileged account spawn(8) runs the policy service as.")
@click.option("--policy-listen", default=None,
              help="ADDRESS:PORT of a policy daemon (certkit postfix-policy --listen) instead of spawn(8).")
@_json_option
@home_option
def postfix_cmd(partner: str, cert_file: str | None, key_file: str | None, store: str | None, include_public: bool,
                config_dir: str, listen: str, out: str | None, force: bool, dane: bool, mx: str | None,
                no_inbound: bool, policy_command: str | None, policy_user: str, policy_listen: str | None,
                as_json: bool, home: str | None) -> None:
    """The Postfix settings for Domain Security with PARTNER, and the CA bundle from the trust store.

    With --out, also inbound enforcement on port 25: mail from every partner domain of the trust store
    only with that partner's client certificate (docs/preflight.md, "Postfix inbound enforcement").
    """
    if (cert_file is None) != (key_file is None):
        raise InputError("--cert and --key go together.", "Give both, or neither.")
    if mx is not None and not dane:
        raise InputError("--mx is for --dane.", "Add --dane, or leave --mx out.")
    chain: list[x509.Certificate] = []
    if dane:
        if cert_file is None:
            raise InputError("--dane needs --cert: the TLSA records are computed from the certificate Postfix "
                             "presents.", "Give --cert FILE (leaf first, chain after) and --key FILE.")
        chain = load_certificates(read_input(cert_file, what="certificate file"), source=cert_file)
    trust = open_store(home, store)
    bundle = trust.export_certificates(include_public=include_public)
    cfg = postfix_config(partner, ca_bundle=bundle, config_dir=config_dir,
                         cert_file=str(Path(cert_file).resolve()) if cert_file else None,
                         key_file=str(Path(key_file).resolve()) if key_file else None, listen=listen,
                         dane=dane, dane_chain=chain, mx=mx)
    text: str | None = None
    folder: Path | None = None
    files = dict(cfg.files)
    if out is None:
        text = cfg.main_cf + "\n" + cfg.tls_policy + "\n" + cfg.master_cf
        if cfg.tlsa_zone is not None:
            text += "\n" + cfg.tlsa_zone
        if not as_json:
            click.echo(text, nl=False)
    else:
        if not no_inbound:
            command = policy_command.split() if policy_command is not None else _certkit_command()
            files.update(postfix_inbound(partner, anchors=trust.anchors(), ca_bundle=bundle, config_dir=config_dir,
                                         policy_command=command, user=policy_user, listen=policy_listen).files)
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_many([(folder / n, data, PUBLIC) for n, data in files.items()], overwrite=force)
        if not as_json:
            say(f"Wrote {', '.join(sorted(files))} to {folder}", err=True)
    if as_json:
        echo_json(stamped("config postfix", {
            "partner": partner, "config_dir": config_dir, "listen": listen, "dane": dane,
            "ca_bundle": [certificate_facts(c) for c in bundle], "files": _files(folder, files), "text": text}))


def _certkit_command() -> list[str]:
    """This certkit as an absolute command: the ``certkit`` program on PATH, else this Python with ``-m``."""
    found = shutil.which("certkit")
    return [os.path.abspath(found)] if found else [sys.executable, "-m", "certkit"]


@config_group.command("partner-kit")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write the kit to.")
@click.option("--edge-fqdn", required=True, help="Our Edge's public FQDN.")
@click.option("--domain", "domains", multiple=True, required=True, help="Our mail domain (repeat for each).")
@click.option("--root", "root_file", type=click.Path(), default=None,
              help="Our root certificate (default: the CA home's root).")
@click.option("--crl-url", default=None, help="Our CRL URL (default: the CA home's).")
@click.option("--force", is_flag=True, help="Overwrite files in --out.")
@click.option("--dane", is_flag=True,
              help="Add the TLSA records of --edge-fqdn (as certkit dane tlsa computes them): from --cert FILE, "
                   "else the newest valid certificate for it in the CA home.")
@click.option("--cert", "cert_file", type=click.Path(readable=False), default=None,
              help="With --dane: the chain file our server sends (PEM, leaf first) instead of the CA home.")
@_json_option
@home_option
def partner_kit_cmd(out: str, edge_fqdn: str, domains: tuple[str, ...], root_file: str | None, crl_url: str | None,
                    force: bool, dane: bool, cert_file: str | None, as_json: bool, home: str | None) -> None:
    """What to send the partner: our root (PEM and DER), its fingerprints, our FQDN, domains and CRL URL."""
    if cert_file is not None and not dane:
        raise InputError("--cert is read only with --dane.", "Add --dane, or leave --cert out.")
    chain: list[x509.Certificate] = []
    if dane and cert_file is not None:
        chain = load_certificates(read_input(cert_file, what="certificate file"), source=cert_file)
    elif dane:
        from certkit.cli.dane import certificates_from_home

        leaf, issuer, issuer_sent = certificates_from_home(resolve_home(home), dns_name(edge_fqdn), SystemClock().now())
        # A DANE-TA record matches only a CA certificate the server sends: the CA's chain files carry the
        # intermediate, not the root.
        chain = [leaf, issuer] if issuer_sent else [leaf]
    organisation = None
    more: list[str] = []
    if root_file:
        root = load_certificates(read_input(root_file, what="root certificate"), source=root_file)[0]
    else:
        from certkit.ca import CertificateAuthority

        with CertificateAuthority.open(resolve_home(home)) as ca:
            root, organisation = ca.root, ca.name
            crl_url = crl_url or ca.crl_url
            more = [ca.root_crl_url] if ca.root_crl_url else []
    files = partner_kit(root, edge_fqdn=edge_fqdn, domains=domains, crl_url=crl_url, organisation=organisation,
                        more_crl_urls=more, dane_chain=chain)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_many([(folder / n, data, PUBLIC) for n, data in files.items()], overwrite=force)
    if as_json:
        echo_json(stamped("config partner-kit", {
            "edge_fqdn": edge_fqdn, "domains": list(domains), "root": certificate_facts(root),
            "crl_urls": [u for u in (crl_url, *more) if u], "dane": dane, "files": _files(folder, files)}))
        return
    say(f"Wrote {', '.join(sorted(files))} to {folder}", err=True)


COMMANDS: list[click.Command] = [config_group]
