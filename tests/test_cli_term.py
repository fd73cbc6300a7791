"""The terminal side of the CLI (issue 10): "did you mean" in every group, the completion scripts, one plural
rule, the progress bar and the colours -- the last two on a real pseudo-terminal, and never in a pipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from certkit.cli import main
from certkit.core.text import plural


def _groups(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Group]]:
    if not isinstance(command, click.Group):
        return []
    ctx = click.Context(command)
    out = [(path, command)]
    for name in command.list_commands(ctx):
        sub = command.get_command(ctx, name)
        assert sub is not None
        out += _groups(sub, (*path, name))
    return out


GROUPS = _groups(main)


def test_every_group_is_a_certkit_group() -> None:
    from certkit.cli.common import CertkitGroup

    assert len(GROUPS) >= 7
    assert all(isinstance(g, CertkitGroup) for _, g in GROUPS)


@pytest.mark.parametrize(("path", "group"), GROUPS, ids=[" ".join(p) or "certkit" for p, _ in GROUPS])
def test_every_group_says_did_you_mean(path: tuple[str, ...], group: click.Group) -> None:
    name = sorted(group.list_commands(click.Context(group)))[-1]
    typo = name[:-1] + ("x" if name[-1] != "x" else "y")
    result = CliRunner().invoke(main, [*path, typo])
    assert result.exit_code == 2
    assert f"Error: No such command '{typo}'. Did you mean " in result.stderr and f"'{name}'" in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["prob"], "No such command 'prob'. Did you mean 'probe'?"),
    (["pr"], "No such command 'pr'. Did you mean 'preflight' or 'probe'?"),
    (["trust", "lst"], "No such command 'lst'. Did you mean 'list'?"),
    (["xyzzy"], "No such command 'xyzzy'.\n"),
])
def test_did_you_mean_messages(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_top_level_version_is_certkits() -> None:
    from importlib.metadata import version

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and version("certkit") in result.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_clicks_script(shell: str) -> None:
    ours = CliRunner().invoke(main, ["completion", shell])
    assert ours.exit_code == 0, ours.output
    clicks = CliRunner().invoke(main, [], prog_name="certkit", env={"_CERTKIT_COMPLETE": f"{shell}_source"})
    assert clicks.exit_code == 0
    assert ours.stdout == clicks.stdout and "_CERTKIT_COMPLETE" in ours.stdout and len(ours.stdout) > 200


def test_completion_completes_commands_and_options() -> None:
    env = {"_CERTKIT_COMPLETE": "bash_complete", "COMP_WORDS": "certkit pro", "COMP_CWORD": "1"}
    result = CliRunner().invoke(main, [], prog_name="certkit", env=env)
    assert result.stdout.split() == ["plain,probe"]
    env = {**env, "COMP_WORDS": "certkit config exchange --tar", "COMP_CWORD": "3"}
    assert CliRunner().invoke(main, [], prog_name="certkit", env=env).stdout.split() == ["plain,--target"]


def test_completion_refuses_an_unknown_shell() -> None:
    result = CliRunner().invoke(main, ["completion", "tcsh"])
    assert result.exit_code == 2 and "'tcsh' is not one of 'bash', 'zsh', 'fish'" in result.stderr


@pytest.mark.parametrize(("count", "noun", "text"), [
    (0, "anchor", "0 anchors"), (1, "anchor", "1 anchor"), (2, "warning", "2 warnings"),
    (1, "address", "1 address"), (3, "address", "3 addresses"), (2, "policy", "2 policies"),
    (2, "key", "2 keys"), (2, "match", "2 matches"),
])
def test_plural(count: int, noun: str, text: str) -> None:
    assert plural(count, noun) == text


def test_no_count_in_the_cli_or_the_templates_says_s_in_brackets() -> None:
    import re
    from pathlib import Path

    root = Path(__file__).parent.parent
    files = [*(root / "certkit" / "cli").glob("*.py"), *(root / "templates").glob("*.j2")]
    count_then_noun = re.compile(r"\}\}? [a-z ]+\(e?s\)")  # "{n} certificate(s)", "{{ n }} warning(s)"
    offenders = [f"{f.name}: {line.strip()}" for f in files for line in f.read_text().splitlines()
                 if count_then_noun.search(line)]
    assert not offenders


# --- a real terminal: a pseudo-terminal for stderr (and stdout where said) ---------------------------------


def _drain(fd: int) -> bytes:
    """Everything the other side of the pseudo-terminal wrote, until it is closed."""
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: every copy of the other end is closed
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def on_a_terminal(show: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> str:
    """What ``show()`` writes to a ``sys.stderr`` that is a real terminal (in this process)."""
    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=True) as tty:
            monkeypatch.setattr(sys, "stderr", tty)
            show()
            tty.flush()
            monkeypatch.undo()
        return _drain(master).decode()
    finally:
        os.close(master)


def certkit_on_a_terminal(*args: str, stdout_too: bool = False, env: dict[str, str] | None = None,
                          ) -> tuple[int, str, str]:
    """``certkit ARGS`` in a child process whose stderr (and, with ``stdout_too``, stdout) is a terminal:
    (exit code, stdout, what the terminal received)."""
    root = Path(__file__).parent.parent
    environ = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    environ.update({"PYTHONPATH": str(root), "TERM": "xterm", "COLUMNS": "120", **(env or {})})
    master, slave = os.openpty()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen([sys.executable, "-m", "certkit", *args], stdin=subprocess.DEVNULL,
                                stdout=slave if stdout_too else out, stderr=slave, env=environ)
        os.close(slave)
        try:
            seen = _drain(master)
        finally:
            os.close(master)
        code = proc.wait(timeout=60)
        out.seek(0)
        return code, out.read().decode(), seen.decode()


REFUSED = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]  # nothing listens: each is one quick address


def test_probe_draws_one_bar_for_several_targets_on_a_terminal(tmp_path: Path) -> None:
    code, out, tty = certkit_on_a_terminal("probe", *REFUSED, "--home", str(tmp_path), "--timeout", "3", "--json")
    assert code == 3 and len(json.loads(out)["results"]) == 3  # the report alone on stdout
    frames = [f.replace("\x1b[?25l", "").replace("\x1b[?25h", "").rstrip() for f in tty.split("\r") if f.strip()]
    assert frames[0] == "[--------------------] 0/0 addresses (3 targets to resolve)"
    assert "[--------------------] 0/1 address (2 targets to resolve)" in frames
    assert frames[-1] == "[####################] 3/3 addresses"
    assert tty.endswith("\x1b[?25h\r\n")  # the line ended and the cursor given back


def test_probe_draws_no_bar_for_one_target_nor_into_a_pipe(tmp_path: Path) -> None:
    code, out, tty = certkit_on_a_terminal("probe", REFUSED[0], "--home", str(tmp_path), "--timeout", "3")
    assert code == 3 and tty == "" and "net.refused" in out
    piped = subprocess.run([sys.executable, "-m", "certkit", "probe", *REFUSED, "--home", str(tmp_path),
                            "--timeout", "3"], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert piped.returncode == 3 and piped.stderr == "" and "\x1b" not in piped.stdout


def test_severities_and_verdicts_are_coloured_on_a_terminal_only(tmp_path: Path) -> None:
    code, _, tty = certkit_on_a_terminal("probe", REFUSED[0], "--home", str(tmp_path), "--timeout", "3",
                                         stdout_too=True)
    assert code == 3
    assert click.style("would fail: connection refused", fg="red", bold=True) in tty
    assert "  " + click.style("error", fg="red", bold=True) + ": net.refused:" in tty
    plain = CliRunner().invoke(main, ["probe", REFUSED[0], "--home", str(tmp_path), "--timeout", "3"])
    assert plain.exit_code == 3 and "\x1b" not in plain.output and "  error: net.refused:" in plain.stdout


@pytest.mark.parametrize("value", ["1", "true", "0"])  # any non-empty value (https://no-color.org)
def test_no_color_turns_colour_off_on_a_terminal(tmp_path: Path, value: str) -> None:
    code, _, tty = certkit_on_a_terminal("probe", REFUSED[0], "--home", str(tmp_path), "--timeout", "3",
                                         stdout_too=True, env={"NO_COLOR": value})
    assert code == 3 and "\x1b[" not in tty and "  error: net.refused:" in tty


def test_empty_no_color_keeps_colour_and_errors_are_coloured_on_stderr(tmp_path: Path) -> None:
    code, _, tty = certkit_on_a_terminal("trust", "show", "nothing", "--home", str(tmp_path), env={"NO_COLOR": ""})
    assert code != 0 and "certkit: " + click.style("error", fg="red", bold=True) + ": " in tty


def test_rendered_reports_colour_their_severity_column_and_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    from certkit.cli import colour

    text = "Verdict:   NOT READY (1 blocking)\n  ERROR   tls.x: t\n  ERRORS are words\nhost: INFO x\n"
    assert colour.paint_report(text) == text  # stdout here is not a terminal
    monkeypatch.setattr(colour, "colour_on", lambda err=False: True)
    painted = colour.paint_report(text).splitlines()
    assert painted[0] == "Verdict:   " + click.style("NOT READY", fg="red", bold=True) + " (1 blocking)"
    assert painted[1] == "  " + click.style("ERROR", fg="red", bold=True) + "   tls.x: t"
    assert painted[2:] == ["  ERRORS are words", "host: INFO x"]
    assert colour.paint_report("BREAKS CN=mail") == click.style("BREAKS", fg="red", bold=True) + " CN=mail"


def test_the_command_tree_in_docs_names_every_command() -> None:
    import re

    tree = (Path(__file__).parent.parent / "docs" / "cli.md").read_text().split("```")[1]
    named = set()
    for line in tree.strip().splitlines():
        *path, last = re.split(r"\s{2,}", line)[0].split()[1:]  # "certkit dane rollover next|switch   what"
        named |= {" ".join([*path, alternative]) for alternative in last.split("|")}
    leaves = {" ".join((*p, n)) for p, g in GROUPS for n in g.list_commands(click.Context(g))
              if not isinstance(g.get_command(click.Context(g), n), click.Group)}
    # A leaf is named itself, or with the choices of its argument ("completion bash|zsh|fish").
    assert {leaf for leaf in leaves if leaf not in named and not any(n.startswith(leaf + " ") for n in named)} == set()
