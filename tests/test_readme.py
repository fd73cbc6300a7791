"""The README stays true: its first commands, every catalogue code, every command it names."""

from __future__ import annotations

import re
from pathlib import Path

import click

from certkit.cli import main
from certkit.core.findings import CATALOGUE

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_starts_with_the_two_setup_commands() -> None:
    block = README.split("```", 2)[1]
    assert "make demo" in block.splitlines()[1] and "make test" in block.splitlines()[2]


def test_the_readme_catalogue_table_is_the_catalogue() -> None:
    from certkit.core.findings import markdown_table

    # Regenerate with: .venv/bin/python -c "from certkit.core.findings import markdown_table; print(markdown_table())"
    assert markdown_table() in README


def test_every_catalogue_code_is_documented_with_its_texts() -> None:
    for code, entry in CATALOGUE.items():
        row = next((line for line in README.splitlines() if line.startswith(f"| `{code}` |")), None)
        assert row is not None, f"{code} missing from the README's catalogue table"
        if entry.tlsrpt_result_type:
            assert entry.tlsrpt_result_type in row


def test_every_command_the_readme_names_exists() -> None:
    parts = README.split("```")
    fenced = [line for block in parts[1::2] for line in block.splitlines()]
    inline = [span for prose in parts[0::2] for span in re.findall(r"`([^`\n]+)`", prose)]
    pattern = re.compile(r"(?:^|\$ )certkit ([a-z][a-z-]+(?: [a-z][a-z-]+)?)")
    named = {m.group(1) for text in fenced + inline if (m := pattern.search(text.strip()))}
    assert named
    ctx = click.Context(main)
    for words in sorted(named):
        first, *rest = words.split()
        command = main.get_command(ctx, first)
        assert command is not None, f"README names 'certkit {words}'"
        if rest and isinstance(command, click.Group) and rest[0] not in {"and", "or"}:
            sub = command.get_command(ctx, rest[0])
            assert sub is not None, f"README names 'certkit {words}'"
