"""``certkit lab``: the Domain Security endpoint (``serve``), the sending Edge (``send``) and the demo (``demo``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
from pathlib import Path

import click

from certkit.adapters.identity import load_identity
from certkit.adapters.transport import ClientIdentity
from certkit.cli.common import CertkitGroup, echo_json, home_option, key_passphrase, open_store, say, store_path
from certkit.core.text import plural, printable
from certkit.core.trust import AnchorSet
from certkit.errors import InputError
from certkit.lab.demo import run_demo
from certkit.lab.sender import diagnosis_lines, queue_lines, send_message
from certkit.lab.server import LabConfig, LabServer, Personality
from certkit.schemas import stamped

__all__ = ["COMMANDS", "lab"]


def _identity(cert: str, key: str, chain: str | None) -> ClientIdentity:
    return load_identity(cert, key, chain=chain, passphrase=key_passphrase())


def _anchors(store: str | None, home: str | None, managed_only: bool) -> AnchorSet:
    path = store_path(home, store)
    if not path.exists():
        if store:
            raise InputError(f"The trust store {store} does not exist.", "Create it with certkit trust add --store.")
        return AnchorSet()
    return open_store(home, store).anchor_set(managed_only=managed_only)


class _EscapingFormatter(logging.Formatter):
    """Every log line escaped with :func:`~certkit.core.text.printable` as a whole: whatever a client, a
    certificate or a file name put in a record, each record stays one line of plain text."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise InputError(f"Bad --listen {text!r}.", "Write ADDRESS:PORT, e.g. 127.0.0.1:2525.")
    return host.strip("[]") or "127.0.0.1", int(port)


@click.group("lab", cls=CertkitGroup)
def lab() -> None:
    """A Domain Security lab on loopback: an Exchange-like (or Postfix-like) endpoint, a sending Edge, the demo."""


@lab.command("serve")
@click.option("--cert", required=True, type=click.Path(),
              help="Our certificate (PEM, may hold the chain).")
@click.option("--key", required=True, type=click.Path(), help="Its key ($CERTKIT_KEY_PASSPHRASE).")
@click.option("--chain", type=click.Path(), default=None, help="Intermediates to send (PEM).")
@click.option("--store", type=click.Path(file_okay=False), default=None, help="Trust store (default: <home>/trust).")
@click.option("--managed-only", is_flag=True, help="Trust only the managed anchors, not certifi's public roots.")
@click.option("--domain-secure", "domain_secure", multiple=True, metavar="DOMAIN",
              help="A partner domain whose mail must come over mutual TLS (repeatable; TLSReceiveDomainSecureList).")
@click.option("--listen", default="127.0.0.1:2525", show_default=True, help="ADDRESS:PORT (port 0: any free port).")
@click.option("--personality", type=click.Choice(["exchange", "postfix"]), default="exchange", show_default=True,
              help="Whose replies: exchange (454 4.7.5 at MAIL FROM) or postfix (421 4.7.1 after the handshake).")
@click.option("--validator", type=click.Choice(["exchange", "postfix"]), default=None,
              help="Whose revocation rules (default: the personality's).")
@click.option("--require-tls", is_flag=True, help="Answer MAIL FROM without TLS with 530 5.7.0.")
@click.option("--maildir", type=click.Path(file_okay=False), default=None, help="Deliver accepted mail here.")
@click.option("--hostname", default=None, help="Name in the banner and replies (default: the certificate's).")
@click.option("--max-size", default=10 * 1024 * 1024, show_default=True, type=click.IntRange(1024),
              help="Largest message accepted, in octets.")
@click.option("--max-sessions", default=20, show_default=True, type=click.IntRange(1, 10000),
              help="Concurrent sessions; more wait for a slot, then get 421 4.3.2.")
@click.option("--timeout", default=None, type=click.FloatRange(0.1),
              help="Seconds a client has to send each whole command line, each whole message after DATA and "
                   "to finish the TLS handshake (then 421); not per read, so trickling clients cannot hold a "
                   "session. [default: 300; the handshake 30]")
@click.option("--stress-timeout", default=10.0, show_default=True, type=click.FloatRange(0.1),
              help="The timeout while all --max-sessions slots are taken (Postfix's ${stress?{10}:{300}}s), so "
                   "idle connections cannot lock others out; a new connection then waits this plus 1 s for a slot.")
@home_option
def serve_cmd(cert: str, key: str, chain: str | None, store: str | None, managed_only: bool,
              domain_secure: tuple[str, ...], listen: str, personality: str, validator: str | None,
              require_tls: bool, maildir: str | None, hostname: str | None, max_size: int, max_sessions: int,
              timeout: float | None, stress_timeout: float, home: str | None) -> None:
    """Run an SMTP endpoint that asks for a client certificate and judges it like Exchange or Postfix.

    Sessions are logged on stderr, one line each, with the findings that explain a refused certificate.
    Stop with Ctrl-C.
    """
    ident = _identity(cert, key, chain)
    host, port = _listen(listen)
    config = LabConfig(ident.cert, ident.key, ident.chain, anchors=_anchors(store, home, managed_only),
                       domain_secure=domain_secure, personality=Personality(personality),
                       validator=Personality(validator) if validator else None, require_tls=require_tls,
                       maildir=Path(maildir) if maildir else None, hostname=hostname, max_message=max_size,
                       max_sessions=max_sessions, stress_timeout=stress_timeout)
    if timeout is not None:
        # One --timeout for every wait on the client, the handshake included (Postfix's smtpd_timeout covers
        # the handshake too); without it, RFC 5321's 5 minutes per command and LabConfig's 30 s per handshake.
        config = dataclasses.replace(config, command_timeout=timeout, data_timeout=timeout,
                                     handshake_timeout=timeout)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_EscapingFormatter("%(asctime)s %(message)s"))
    logger = logging.getLogger("certkit.lab")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    async def main() -> None:
        server = LabServer(config, host=host, port=port)
        try:
            await server.start()
        except OSError as e:
            raise InputError(f"Cannot listen on {listen}: {e.strerror or e}.", "Choose another --listen.") from e
        secure = ", ".join(config.domain_secure) or "none"
        say(f"certkit lab: listening on {host}:{server.port} as {config.host} ({config.personality} "
                   f"personality; domain-secure: {secure}; {plural(len(config.anchors), 'trusted anchor')})", err=True)
        await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


@lab.command("send")
@click.option("--from", "mail_from", required=True, help="Sender address (its domain is ours).")
@click.option("--to", "rcpt_to", required=True, help="Recipient address (its domain is the next hop).")
@click.option("--via", default=None, metavar="HOST:PORT", help="Deliver here instead of the MX hosts.")
@click.option("--cert", required=True, type=click.Path(), help="Our transport certificate (PEM).")
@click.option("--key", required=True, type=click.Path(), help="Its key ($CERTKIT_KEY_PASSPHRASE).")
@click.option("--chain", type=click.Path(), default=None, help="Intermediates to send (PEM).")
@click.option("--store", type=click.Path(file_okay=False), default=None, help="Trust store (default: <home>/trust).")
@click.option("--managed-only", is_flag=True, help="Trust only the managed anchors, not certifi's public roots.")
@click.option("--domain-secure", is_flag=True,
              help="Domain Security (TLSSendDomainSecureList): require TLS and validate the receiver's certificate "
                   "for the recipient domain, revocation included.")
@click.option("--nameserver", default=None, help="DNS server as IP[:PORT] (default: the system's).")
@click.option("--helo", default=None, help="EHLO name (default: our certificate's name).")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0.1), help="Seconds per step.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (docs/json.md).")
@click.option("-v", "--verbose", is_flag=True, help="Show the SMTP transcript.")
@home_option
def send_cmd(mail_from: str, rcpt_to: str, via: str | None, cert: str, key: str, chain: str | None,
             store: str | None, managed_only: bool, domain_secure: bool, nameserver: str | None, helo: str | None,
             timeout: float, as_json: bool, verbose: bool, home: str | None) -> None:
    """Deliver one test message as the sending Edge does; on failure show the queue as Get-Queue does.

    Exit 0 when delivered, 1 when not.
    """
    ident = _identity(cert, key, chain)
    result = send_message(mail_from, rcpt_to, identity=ident, anchors=_anchors(store, home, managed_only), via=via,
                          domain_secure=domain_secure, nameserver=nameserver, helo_name=helo, timeout=timeout)
    if as_json:
        echo_json(stamped("lab send", result.to_dict()))
    else:
        # The receiver's replies and names are its text: printable() escapes control characters (ESC, CR).
        def out(text: str) -> None:
            click.echo(printable(text))

        if verbose:
            for attempt in result.attempts:
                for line in attempt.session.transcript:
                    out(str(line))
        if result.delivered:
            attempt = next(a for a in result.attempts if a.delivered)
            tls = attempt.session.tls
            assert attempt.accepted is not None
            out(f"Delivered to {result.next_hop} via {attempt.session.address}:{attempt.session.port} "
                f"({tls.version if tls else 'without TLS'}"
                f"{', domain-secured' if domain_secure and tls else ''}): {attempt.accepted.text}")
        else:
            out("Not delivered; the message stays in the queue. Get-Queue | fl shows:")
            for row in queue_lines(result):
                out("  " + row)
            out("")
            out("certkit's diagnosis (our side):")
            for row in diagnosis_lines(result):
                out("  " + row)
    sys.exit(0 if result.delivered else 1)


@lab.command("demo")
@click.option("--keep", is_flag=True, help="Keep the temporary folder and print its path.")
def demo_cmd(keep: bool) -> None:
    """Contoso and Fabrikam on loopback: the 454 4.7.5 failure with self-signed certificates, its diagnosis,
    the fix with CA-signed certificates and exchanged roots, and domain-secured delivery both ways."""
    result = run_demo(click.echo, keep=keep)
    sys.exit(0 if result.ok else 1)


#: The commands the ``certkit`` group registers.
COMMANDS: list[click.Command] = [lab]
