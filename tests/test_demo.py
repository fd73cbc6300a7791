"""``make demo`` runs ``certkit demo``: it must work and say what it does."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from certkit.cli import main


def test_demo_walks_through_issue_pfx_revoke_crl_and_cleans_up() -> None:
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for step in ("1. Create Contoso's internal CA", "2. Issue the Edge's transport certificate",
                 "3. Check the PFX", "4. The key leaked: revoke", "5. Publish the CRL", "6. Status"):
        assert step in out
    assert re.search(r"thumbprint \(as Exchange shows it\): [0-9A-F]{40}\n", out)
    assert "lint: no problems" in out
    assert "is now revoked (keyCompromise)" in out
    assert "CRL #1, next update" in out
    folder = re.search(r"Working in (\S+) ", out)
    assert folder is not None
    import os

    assert not os.path.exists(folder.group(1))


# --- the commands the demos show can be pasted -------------------------------------------------------

def _shown_commands(text: str) -> list[list[str]]:
    return [shlex.split(line.split("$ certkit ", 1)[1]) for line in text.splitlines() if "$ certkit " in line]


def _parse(words: list[str]) -> tuple[click.Command, dict[str, object]]:
    """Parse a command line as ``certkit`` would (options, choices, paths), without running it."""
    command: click.Command = main
    rest = list(words)
    name = "certkit"
    while isinstance(command, click.Group):
        name = rest.pop(0)
        found = command.get_command(click.Context(command), name)
        assert found is not None, f"no command {name} in {words}"
        command = found
    with command.make_context(name, rest) as ctx:
        return command, dict(ctx.params)


def _check_pasteable(commands: list[list[str]], folder: Path, homes: set[str]) -> None:
    """Each command parses, names a CA home of the demo's when it is a ``ca`` command, and every file or
    folder it names exists in the demo's folder (the commands run from there) and is named relative to it."""
    assert commands
    for words in commands:
        command, params = _parse(words)
        if words[0] == "ca":
            assert params["home"] in homes, words
        for param in command.params:
            value = params.get(param.name or "")
            if isinstance(param.type, click.Path) and isinstance(value, str):
                assert not Path(value).is_absolute() and (folder / value).exists(), (words, value)


def test_the_ca_demo_shows_commands_that_run_from_its_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(main, ["demo", "--keep"])
    assert result.exit_code == 0, result.output
    folder = Path(re.search(r"Kept (\S+)", result.stdout).group(1))  # type: ignore[union-attr]
    try:
        monkeypatch.chdir(folder)
        commands = _shown_commands(result.stdout)
        assert [w[:2] for w in commands] == [["ca", "init"], ["ca", "issue"], ["ca", "revoke"], ["ca", "crl"],
                                             ["ca", "status"]]
        _check_pasteable(commands, folder, {"contoso-ca"})
        again = CliRunner().invoke(main, commands[3])  # the CRL step, pasted: it publishes CRL #2
        assert again.exit_code == 0, again.output
        assert "CRL #2" in again.stdout
    finally:
        shutil.rmtree(folder)


def test_the_lab_demo_shows_commands_that_run_from_its_folder(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from certkit.lab.demo import run_demo

    lines: list[str] = []
    folder = tmp_path / "demo"
    assert run_demo(lines.append, folder=folder).ok
    monkeypatch.chdir(folder)
    commands = _shown_commands("\n".join(lines))
    assert {tuple(w[:2]) for w in commands} == {("lab", "send"), ("ca", "init"), ("ca", "issue"), ("ca", "crl"),
                                               ("ca", "root"), ("trust", "add"), ("config", "exchange")}
    _check_pasteable(commands, folder, {"contoso.com/ca", "fabrikam.com/ca"})
    for words in commands:
        if words[:2] in (["trust", "add"], ["ca", "crl"]):  # the steps that can be repeated: pasted, they work
            pasted = CliRunner().invoke(main, words)
            assert pasted.exit_code == 0, (words, pasted.output)
    exported = CliRunner().invoke(main, [*commands[-1][:-2]])  # config exchange, to stdout: the script shown
    assert exported.exit_code == 0, exported.output
    assert exported.stdout == (folder / commands[-1][-1]).read_text()
