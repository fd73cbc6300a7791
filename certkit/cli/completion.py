"""``certkit completion bash|zsh|fish``: the shell's completion script, as click writes it.

The script is the one click prints for ``_CERTKIT_COMPLETE=bash_source certkit``; at each <TAB> the shell
runs ``certkit`` again with ``_CERTKIT_COMPLETE=bash_complete``, which click answers before any command runs.
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

__all__ = ["COMMANDS", "COMPLETE_VAR", "SHELLS"]

#: The variable click's completion reads: ``_<PROG>_COMPLETE`` for the program ``certkit``.
COMPLETE_VAR = "_CERTKIT_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL.

    \b
    bash:  eval "$(certkit completion bash)"   in ~/.bashrc
    zsh:   eval "$(certkit completion zsh)"    in ~/.zshrc
    fish:  certkit completion fish > ~/.config/fish/completions/certkit.fish
    """
    comp_cls = get_completion_class(shell)
    assert comp_cls is not None  # bash, zsh and fish are click's own
    comp = comp_cls(ctx.find_root().command, {}, "certkit", COMPLETE_VAR)
    # Bytes, as click writes it: a text stdout on Windows would turn LF into CRLF, which shells refuse.
    click.echo(comp.source().encode(), nl=False)


COMMANDS: list[click.Command] = [completion]
