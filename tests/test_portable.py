"""The CA without POSIX-only primitives: what Windows lacks is taken away in a subprocess.

This machine has no Windows. The subprocess makes ``import fcntl`` fail and removes ``os.link``, the open flags
``O_NONBLOCK``/``O_NOCTTY``,
``os.fchmod`` and ``os.sync`` (absent on Windows with Python 3.11), then runs the CLI: init, issue
(publication by rename), a batch with a file in the way (all or none), renew, revoke, CRL, list and
status, and the trust store. What is *not* verified here: msvcrt locking, Windows' rename semantics
and ACLs (see the README).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_WITHOUT_POSIX = r"""
import builtins, os, sys
for name in ("link", "fchmod", "sync", "O_NONBLOCK", "O_NOCTTY"):
    if hasattr(os, name):
        delattr(os, name)
sys.modules["fcntl"] = None  # import fcntl -> ImportError, as on Windows
real_import = builtins.__import__
def guarded(name, *args, **kwargs):
    if name in ("fcntl", "termios", "pwd", "grp", "resource"):
        raise ImportError(f"No module named {name!r} (simulated Windows)")
    return real_import(name, *args, **kwargs)
builtins.__import__ = guarded
from certkit.cli import main
try:
    main(sys.argv[1:])
finally:
    loaded = [m for m in ("fcntl", "termios", "pwd", "grp", "resource") if sys.modules.get(m) is not None]
    assert not loaded, loaded
"""


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "without_posix.py"
    script.write_text(_WITHOUT_POSIX)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CERTKIT_CA_PASSPHRASE": "pw-portable",
           "CERTKIT_PFX_PASSWORD": "pfx", "PYTHONWARNINGS": "error::UserWarning"}
    return subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True, timeout=120)


def test_the_ca_runs_without_fcntl_hard_links_fchmod_or_sync(tmp_path: Path) -> None:
    home, out = str(tmp_path / "home"), tmp_path / "out"
    steps = [
        ["ca", "init", "--name", "Portable CA", "--key", "ec-p256", "--crl-url", "http://pki.contoso.com/ca.crl"],
        ["ca", "issue", "mail.contoso.com", "--key", "ec-p256", "--pfx", "--out", str(out)],
        ["ca", "renew", "mail.contoso.com", "--rekey", "--force", "--out", str(out)],
        ["ca", "issue", "old.contoso.com", "--key", "ec-p256", "--out", str(out)],
        ["ca", "revoke", "old.contoso.com", "--reason", "superseded"],
        ["ca", "crl"],
        ["ca", "list"],
        ["ca", "status"],
        ["trust", "add", str(tmp_path / "home" / "root.crt")],
        ["trust", "list"],
    ]
    for args in steps:
        done = _run(tmp_path, *args, "--home", home)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    assert (out / "mail.contoso.com.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "home").stat().st_mode & 0o777 == 0o700
    # Without hard links an existing file is still never replaced, and a batch is all or none.
    names = tmp_path / "names.txt"
    names.write_text("new.contoso.com\nmail.contoso.com\n")
    before = sorted(p.name for p in out.iterdir())
    refused = _run(tmp_path, "ca", "issue", "--from", str(names), "--key", "ec-p256", "--home", home,
                   "--out", str(out))
    assert refused.returncode == 2 and "already exists" in refused.stderr, refused.stderr
    assert sorted(p.name for p in out.iterdir()) == before
    listed = _run(tmp_path, "ca", "list", "--home", home)
    assert "new.contoso.com" not in listed.stdout
