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
    from certkit.schemas import COMMON, DOCUMENTS

    for schema in {COMMON, *(d.schema for d in DOCUMENTS.values())}:  # every --json document's schema
        assert f"certkit/schemas/{schema}" in names, schema
    assert not [n for n in names if n.startswith("ca/") or "/ca/README" in n]
    assert not [n for n in names if n.startswith("tests/")]


def test_pip_installed_wheel_gives_a_working_certkit_command(wheel: Path, tmp_path: Path) -> None:
    # A fresh venv with the wheel installed by pip (console script included); the dependencies come from
    # this environment's site-packages through PYTHONPATH, so the test needs no network.
    import site

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps",
                    "--no-index", "-q", str(wheel)], check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": site.getsitepackages()[0]}
    certkit = str(venv / "bin" / "certkit")
    subprocess.run([certkit, "selfsigned", "edge01.contoso.com", "--out", str(tmp_path)], env=env, cwd=tmp_path,
                   check=True, capture_output=True, timeout=120)
    done = subprocess.run([certkit, "inspect", str(tmp_path / "edge01.contoso.com.crt")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Domain-security lint" in done.stdout  # rendered from the template inside the installed package
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import certkit.adapters.render as r; print(r.template_dir())"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True)
    where_text = where.stdout.strip()
    assert where_text == str(venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
                        / "certkit" / "templates")
