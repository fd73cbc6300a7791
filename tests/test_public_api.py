"""The public API is what __all__ says; the core stays pure; errors travel."""

from __future__ import annotations

import ast
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import certkit
from certkit import errors

PKG = Path(certkit.__file__).resolve().parent


def test_everything_in_all_is_importable_and_documented() -> None:
    for name in certkit.__all__:
        obj = getattr(certkit, name)
        if callable(obj) and not isinstance(obj, type(certkit.CATALOGUE)):
            assert obj.__doc__, f"{name} has no docstring"


def test_all_lists_the_main_nouns() -> None:
    for name in ("CertificateAuthority", "IssuedCertificate", "CertkitError", "Finding", "CATALOGUE", "KeyType",
                 "FixedClock", "lint_certificate", "exchange_selfsigned", "TrustStore", "verify_chain",
                 "VerificationResult", "Anchor"):
        assert name in certkit.__all__


def test_the_public_api_is_the_type_checking_block_read_as_python_reads_it() -> None:
    """certkit/__init__.py declares each public name once, as an import that type checkers read; the lazy
    look-up reads the same lines. Every import there must be ``from M import N as N`` and be found."""
    tree = ast.parse((PKG / "__init__.py").read_text())
    [block] = [n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]
    imports = [n for n in block.body if isinstance(n, ast.ImportFrom)]
    assert len(imports) == len(block.body)
    declared = {a.asname: n.module for n in imports for a in n.names if a.asname == a.name}
    assert len(declared) == sum(len(n.names) for n in imports), "import each public name as itself"
    assert certkit._public_api() == declared
    assert certkit.__all__ == sorted(declared)
    assert set(dir(certkit)) >= set(declared)


def test_the_options_objects_are_public() -> None:
    for name in ("VerifyOptions", "ProbeOptions", "PreflightOptions", "Override"):
        assert name in certkit.__all__ and getattr(certkit, name).__doc__


def test_import_certkit_imports_no_certkit_module() -> None:
    code = ("import sys, certkit; found = sorted(m for m in sys.modules if m.startswith('certkit.'));"
            "assert not found, found")
    subprocess.run([sys.executable, "-c", code], check=True)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("layer", ["core", "adapters"])
def test_core_and_adapters_never_import_the_cli(layer: str) -> None:
    for path in (PKG / layer).rglob("*.py"):
        assert not [m for m in _imports(path) if m.startswith("certkit.cli") or m == "click"], path


def test_core_never_prints_or_touches_sockets_or_files() -> None:
    for path in (PKG / "core").rglob("*.py"):
        source = path.read_text()
        tree = ast.parse(source)
        calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert "print" not in calls, path
        assert "open" not in calls, path
        assert not {"socket", "sqlite3", "OpenSSL", "jinja2", "dns", "certifi", "prometheus_client"} & {
            m.split(".")[0] for m in _imports(path)}, path


@pytest.mark.parametrize("lib", ["OpenSSL", "jinja2", "certifi", "dns", "prometheus_client"])
def test_each_foreign_library_lives_in_one_module(lib: str) -> None:
    users = [p for p in PKG.rglob("*.py") if any(m.split(".")[0] == lib for m in _imports(p))]
    assert len(users) <= 1, users


def test_errors_pickle_and_print_as_one_line() -> None:
    err = errors.PolicyError("The key is RSA 1024.", "Generate a new key.")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is errors.PolicyError
    assert str(again) == "The key is RSA 1024. Generate a new key."
    assert again.exit_code == 2
    assert errors.StoreError("x").exit_code == 1
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.CertkitError)


def test_only_the_cli_imports_click_or_prints() -> None:
    for path in PKG.rglob("*.py"):
        if "cli" in path.relative_to(PKG).parts or path.name == "__main__.py":
            continue
        assert "click" not in {m.split(".")[0] for m in _imports(path)}, path
        tree = ast.parse(path.read_text())
        calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert "print" not in calls, path


def test_lazy_public_names_resolve_to_their_objects() -> None:
    from certkit.ca import CertificateAuthority as direct

    assert certkit.CertificateAuthority is direct
    assert sorted(certkit.__all__) == sorted(certkit._public_api())
    with pytest.raises(AttributeError):
        certkit.no_such_name  # noqa: B018


def test_probe_and_preflight_are_the_functions_whatever_was_imported_first() -> None:
    import subprocess
    import sys

    code = ("import certkit.checks.preflight, certkit.checks.probe, certkit, inspect;"
            "assert inspect.iscoroutinefunction(certkit.probe), certkit.probe;"
            "assert callable(certkit.preflight) and inspect.isfunction(certkit.preflight), certkit.preflight;"
            "import certkit.cli.probe, certkit.cli.preflight;"
            "assert inspect.isfunction(certkit.preflight) and inspect.isfunction(certkit.probe_sync)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
