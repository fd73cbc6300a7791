"""The command line a report quotes: secrets replaced by ``***`` (certkit.cli.cmdline)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from certkit.cli.cmdline import REDACTED, command_line, invoked_command_line, redact_argv
from certkit.cli.common import CertkitGroup


@pytest.mark.parametrize(("argv", "expected"), [
    # Secret options, both forms; the --*-file passphrase sources too.
    (["certkit", "ca", "init", "--passphrase-file", "/root/pw"], ["certkit", "ca", "init", "--passphrase-file", "***"]),
    (["certkit", "x", "--pfx-password-file=pw.txt"], ["certkit", "x", "--pfx-password-file=***"]),
    (["certkit", "x", "--key-passphrase-file", "-", "--to-ca-passphrase-file", "f"],
     ["certkit", "x", "--key-passphrase-file", "***", "--to-ca-passphrase-file", "***"]),
    (["certkit", "x", "--password", "hunter2", "--api-token=abc", "--client-secret", "s"],
     ["certkit", "x", "--password", "***", "--api-token=***", "--client-secret", "***"]),
    # Not secrets: a key *file* path, ordinary options, positional words.
    (["certkit", "preflight", "--key", "edge.key", "--partner", "fabrikam.com", "--at", "2026-01-01T00:00:00Z"],
     ["certkit", "preflight", "--key", "edge.key", "--partner", "fabrikam.com", "--at", "2026-01-01T00:00:00Z"]),
    # Credentials in a URL.
    (["certkit", "ca", "init", "--crl-url", "http://user:pw@crl.contoso.com/ca.crl"],
     ["certkit", "ca", "init", "--crl-url", "http://***@crl.contoso.com/ca.crl"]),
    # After "--" a word is an argument: "--password" there is a name, not an option.
    (["certkit", "x", "--", "--password", "kept"], ["certkit", "x", "--", "--password", "kept"]),
    # A secret option with no value left: nothing to hide.
    (["certkit", "x", "--passphrase-file"], ["certkit", "x", "--passphrase-file"]),
    # A value that looks like an option is still the secret's value.
    (["certkit", "x", "--password", "--not-an-option"], ["certkit", "x", "--password", "***"]),
])
def test_redact_argv(argv: list[str], expected: list[str]) -> None:
    assert redact_argv(argv) == expected
    assert REDACTED == "***"


def test_command_line_is_shell_quoted_and_redacted() -> None:
    line = command_line(["preflight", "--partner", "fabrikam.com", "--cert", "my cert.pem",
                         "--pfx-password-file", "pw"])
    assert line == "certkit preflight --partner fabrikam.com --cert 'my cert.pem' --pfx-password-file '***'"


def test_the_outermost_group_remembers_the_words() -> None:
    group = CertkitGroup("certkit")
    sub = CertkitGroup("ca")
    group.add_command(sub)

    @sub.command("show")
    @click.option("--passphrase-file")
    def show(passphrase_file: str | None) -> None:
        click.echo(repr(invoked_command_line()))

    out = CliRunner().invoke(group, ["ca", "show", "--passphrase-file", "secret.txt"]).output
    assert out.strip() == repr("certkit ca show --passphrase-file '***'")
    assert "secret.txt" not in out
    # A command run on its own (not through a certkit group) has no command line to quote.
    assert CliRunner().invoke(show, ["--passphrase-file", "x"]).output.strip() == "None"
