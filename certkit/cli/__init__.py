"""The ``certkit`` command: a thin shell over the library.

Subcommands are imported when they are used, so ``certkit ca issue`` does not pay for importing the
probe, the lab or the report templates (the CLI's start-up time is most of a single issuance).
"""

from __future__ import annotations

import importlib

import click

from certkit.cli.common import CertkitGroup

__all__ = ["main"]

#: command name -> "module:attribute"
_COMMANDS: dict[str, str] = {
    "ca": "certkit.cli.ca:ca",
    "completion": "certkit.cli.completion:completion",
    "selfsigned": "certkit.cli.ca:selfsigned",
    "inspect": "certkit.cli.ca:inspect",
    "trust": "certkit.cli.trust:trust",
    "probe": "certkit.cli.probe:probe_cmd",
    "preflight": "certkit.cli.preflight:preflight_cmd",
    "config": "certkit.cli.config:config_group",
    "postfix-policy": "certkit.cli.postfix_policy:postfix_policy_cmd",
    "dane": "certkit.cli.dane:dane",
    "mta-sts": "certkit.cli.mtasts:mta_sts",
    "lab": "certkit.cli.lab:lab",
    "demo": "certkit.cli.demo:demo",
    "audit": "certkit.cli.audit:audit_cmd",
    "tlsrpt": "certkit.cli.tlsrpt:tlsrpt",
    "watch": "certkit.cli.watch:watch",
}


class _LazyGroup(CertkitGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="certkit")
def main() -> None:
    """Certificates and trust for mail servers that use mutual TLS (Exchange Domain Security, Postfix)."""
