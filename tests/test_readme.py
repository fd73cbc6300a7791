"""The README and docs/ stay true: the first commands, every catalogue code, every command they name, every link."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from certkit.cli import main
from certkit.core.findings import CATALOGUE

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
FINDINGS = (ROOT / "docs" / "findings.md").read_text()
DOCS = {path: path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}


def test_readme_starts_with_the_two_setup_commands() -> None:
    block = README.split("```", 2)[1]
    assert "make demo" in block.splitlines()[1] and "make test" in block.splitlines()[2]


def test_the_catalogue_table_in_docs_is_the_catalogue() -> None:
    from certkit.core.findings import markdown_table

    # Regenerate with: .venv/bin/python -c "from certkit.core.findings import markdown_table; print(markdown_table())"
    assert markdown_table() in FINDINGS


def test_every_catalogue_code_is_documented_with_its_texts() -> None:
    for code, entry in CATALOGUE.items():
        row = next((line for line in FINDINGS.splitlines() if line.startswith(f"| `{code}` |")), None)
        assert row is not None, f"{code} missing from the catalogue table in docs/findings.md"
        if entry.tlsrpt_result_type:
            assert entry.tlsrpt_result_type in row


@pytest.mark.parametrize("path", list(DOCS), ids=lambda p: p.name)
def test_every_command_the_documentation_names_exists(path: Path) -> None:
    parts = DOCS[path].split("```")
    fenced = [line for block in parts[1::2] for line in block.splitlines()]
    inline = [span for prose in parts[0::2] for span in re.findall(r"`([^`\n]+)`", prose)]
    pattern = re.compile(r"(?:^|\$ )certkit ([a-z][a-z-]+(?: [a-z][a-z-]+)?)")
    named = {m.group(1) for text in fenced + inline if (m := pattern.search(text.strip()))}
    assert named or path.name != "README.md"
    ctx = click.Context(main)
    for words in sorted(named):
        first, *rest = words.split()
        command = main.get_command(ctx, first)
        assert command is not None, f"{path.name} names 'certkit {words}'"
        if rest and isinstance(command, click.Group) and rest[0] not in {"and", "or"}:
            sub = command.get_command(ctx, rest[0])
            assert sub is not None, f"{path.name} names 'certkit {words}'"


def _anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.lstrip("#").strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("path", list(DOCS), ids=lambda p: p.name)
def test_every_local_link_points_at_a_file_and_heading_that_exist(path: Path) -> None:
    for target in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]+))?\)", DOCS[path]):
        file, fragment = target
        if file.startswith(("http:", "https:")) or "(" in file:
            continue
        dest = (path.parent / file).resolve() if file else path
        assert dest.exists(), f"{path.name} links to {file}"
        if fragment and dest.suffix == ".md":
            anchors = {_anchor(m) for m in re.findall(r"^#{1,4} .*$", dest.read_text(), re.M)}
            assert fragment in anchors, f"{path.name} links to {file}#{fragment}"
