"""The wheel, not only the editable install: templates inside, ca/ outside, a working command."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    (whl,) = out.glob("certkit-*.whl")
    return whl


def test_wheel_ships_templates_and_types_but_not_the_ca_home(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "certkit/templates/inspect.txt.j2" in names
    assert "certkit/py.typed" in names
    assert "certkit/schemas/probe.schema.json" in names and "certkit/schemas/preflight.schema.json" in names
    assert not [n for n in names if n.startswith("ca/") or "/ca/README" in n]
    assert not [n for n in names if n.startswith("tests/")]


def test_installed_wheel_finds_its_templates(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    cert = tmp_path / "edge01.crt"
    env = {**os.environ, "PYTHONPATH": str(site)}
    subprocess.run([sys.executable, "-m", "certkit", "selfsigned", "edge01.contoso.com", "--out", str(tmp_path)],
                   env=env, cwd=tmp_path, check=True, capture_output=True, timeout=120)
    done = subprocess.run([sys.executable, "-c",
                           "import certkit, sys; from certkit.adapters.render import template_dir;"
                           "print(certkit.__file__); print(template_dir());"
                           "from certkit.cli import main; sys.argv=['certkit','inspect',sys.argv[1]]; main()",
                           str(cert)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = done.stdout.splitlines()
    assert lines[0].startswith(str(site)), lines[0]
    assert lines[1] == str(site / "certkit" / "templates")
    assert "Domain-security lint" in done.stdout
    assert done.returncode == 0, done.stderr
