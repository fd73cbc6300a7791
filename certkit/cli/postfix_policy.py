"""``certkit postfix-policy``: the Domain Security policy service for Postfix (SMTPD policy delegation).

Run by spawn(8) from master.cf, it talks on standard input and output; with ``--listen`` it is a daemon
on a TCP port (``check_policy_service inet:HOST:PORT``). The decisions are :mod:`certkit.core.postfix_policy`;
the bytes move in :mod:`certkit.adapters.policy_server`.
"""

from __future__ import annotations

import contextlib

import click

from certkit.adapters.inputs import read_input
from certkit.adapters.policy_server import PolicyServer, serve_stream
from certkit.cli.common import say
from certkit.core.postfix_policy import MAX_TABLE_BYTES, PolicyConnection, PolicyTable
from certkit.errors import CertkitError, InputError

__all__ = ["postfix_policy_cmd"]


def _load(path: str) -> tuple[PolicyTable | None, str]:
    try:
        return PolicyTable.from_json(read_input(path, what="partners file", limit=MAX_TABLE_BYTES), source=path), ""
    except CertkitError as exc:
        return None, str(exc)


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise InputError(f"--listen {text!r} is not ADDRESS:PORT.", "Give e.g. 127.0.0.1:10031.")
    return host.strip("[]"), int(port)


@click.command("postfix-policy")
@click.option("--partners", "partners_file", required=True, type=click.Path(dir_okay=False),
              help="certkit-partners.json, as written by certkit config postfix --out.")
@click.option("--listen", default=None,
              help="Serve on ADDRESS:PORT (check_policy_service inet:ADDRESS:PORT) instead of stdin/stdout.")
def postfix_policy_cmd(partners_file: str, listen: str | None) -> None:
    """Postfix SMTPD policy service enforcing Domain Security per sender domain.

    A partners file that cannot be read is not fatal: every request then gets "451 4.3.5" naming the
    problem, so mail waits at the sender instead of passing unchecked.
    """
    table, problem = _load(partners_file)
    if listen is None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # smtpd went away: nothing to answer
            serve_stream(PolicyConnection(table, table_error=problem), 0, 1)
        return
    host, port = _address(listen)
    if problem:
        say(f"warning: {problem} Every request gets 451 4.3.5 until it is fixed.", err=True)
    server = PolicyServer(host, port, lambda: PolicyConnection(table, table_error=problem))
    say(f"certkit postfix-policy listening on {host}:{server.port}", err=True)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    finally:
        server.close()
