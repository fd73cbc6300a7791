"""The ``certkit`` command: a thin shell over the library."""

from __future__ import annotations

import click

from certkit.cli.common import CertkitGroup

__all__ = ["main"]


@click.group(cls=CertkitGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="certkit")
def main() -> None:
    """Certificates and trust for mail servers that use mutual TLS (Exchange Domain Security, Postfix)."""


def _register() -> None:
    from certkit.cli import ca as ca_cli
    from certkit.cli import config as config_cli
    from certkit.cli import demo as demo_cli
    from certkit.cli import lab as lab_cli
    from certkit.cli import preflight as preflight_cli
    from certkit.cli import probe as probe_cli
    from certkit.cli import trust as trust_cli

    for command in (*ca_cli.COMMANDS, *trust_cli.COMMANDS, *probe_cli.COMMANDS, *preflight_cli.COMMANDS,
                    *config_cli.COMMANDS, *lab_cli.COMMANDS, *demo_cli.COMMANDS):
        main.add_command(command)


_register()
