"""Start-up: what ``certkit probe`` imports before it does anything (its CPU time is part of every run)."""

from __future__ import annotations

import subprocess
import sys


def test_the_probe_command_imports_neither_dnspython_nor_key_serialization() -> None:
    # dnspython is only needed for names (certkit.adapters.dns imports it when it resolves), and
    # cryptography's serialization package (ssh, pkcs7, pkcs12: ciphers and the email package) only for
    # keys, PFX and PKCS#7 files: a probe of IP addresses without a client certificate needs neither.
    code = ("import sys, certkit.cli, certkit.cli.probe, certkit.validation;"
            "bad = sorted(m for m in sys.modules if m == 'dns' or m.startswith("
            "('dns.', 'cryptography.hazmat.primitives.serialization')));"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dnspython_is_imported_when_a_name_is_resolved() -> None:
    code = ("import sys; from certkit.adapters.dns import make_resolver, resolve_host;"
            "assert 'dns' not in sys.modules;"
            "assert resolve_host('localhost').addresses == ('127.0.0.1',);"
            "r = make_resolver('127.0.0.1:5353', 2.0); assert r.port == 5353 and r.nameservers == ['127.0.0.1'];"
            "assert 'dns.resolver' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
