"""Files that are not what a certificate file should be: every one ends in one line and exit 2, never a
traceback, and nothing blocks (a FIFO is refused before it is opened for reading)."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from certkit.adapters.inputs import os_error, read_input
from certkit.cli import main
from certkit.errors import InputError, MalformedInputError, NotFoundError, StoreError
from tests import pki
from tests.tools import require_tool

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def leaf_pem() -> bytes:
    return pki.make_leaf(pki.make_root("Hostile Files Root"), ["mx.example.com"]).pem


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path: a unix socket's path must fit in 108 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="ck", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _loop(d: Path) -> Path:
    (d / "loop").symlink_to("loop")
    return d / "loop"


def _loop2(d: Path) -> Path:
    (d / "a").symlink_to("b")
    (d / "b").symlink_to("a")
    return d / "a"


def _long(d: Path) -> Path:
    return d / ("n" * 300 + ".pem")  # NAME_MAX is 255: ENAMETOOLONG


def _notdir(d: Path) -> Path:
    (d / "file").write_text("x")
    return d / "file" / "cert.pem"


def _dangling(d: Path) -> Path:
    (d / "dangling").symlink_to(d / "nowhere")
    return d / "dangling"


def _folder(d: Path) -> Path:
    (d / "folder").mkdir()
    return d / "folder"


def _socket(d: Path) -> Path:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(d / "sock"))
    s.close()
    return d / "sock"


def _fifo(d: Path) -> Path:
    os.mkfifo(d / "fifo")
    return d / "fifo"


def _dev_null(d: Path) -> Path:
    return Path("/dev/null")


def _link_to_dev_zero(d: Path) -> Path:
    (d / "zero.pem").symlink_to("/dev/zero")
    return d / "zero.pem"


BAD: dict[str, tuple[Callable[[Path], Path], str]] = {
    "symlink loop": (_loop, "symbolic links form a loop"),
    "two-link loop": (_loop2, "symbolic links form a loop"),
    "name too long": (_long, "name is too long"),
    "path through a file": (_notdir, "a part of the path is a file"),
    "dangling symlink": (_dangling, "which does not exist"),
    "unix socket": (_socket, "is a socket"),
    "fifo": (_fifo, "is a named pipe (FIFO)"),
    "char device": (_dev_null, "is a character device"),
    "symlink to a device": (_link_to_dev_zero, "is a character device"),
    "folder": (_folder, "is a folder"),
}


def _commands(path: Path, home: Path, good: Path) -> dict[str, list[str]]:
    """Every command that reads a user-given file, with ``path`` in the place of that file."""
    p, h = str(path), str(home)
    return {
        "inspect": ["inspect", p],
        "trust add": ["trust", "add", p, "--home", h],
        "trust verify": ["trust", "verify", p, "--home", h],
        "trust verify --chain": ["trust", "verify", str(good), "--chain", p, "--home", h],
        "trust verify --crl": ["trust", "verify", str(good), "--crl", p, "--home", h],
        "ca sign": ["ca", "sign", p, "--home", h],
        "ca init --passphrase-file": ["ca", "init", "--name", "X", "--passphrase-file", p, "--home", h],
        "lab serve --cert": ["lab", "serve", "--cert", p, "--key", str(good), "--listen", "127.0.0.1:0"],
        "lab serve --key": ["lab", "serve", "--cert", str(good), "--key", p, "--listen", "127.0.0.1:0"],
        "probe --from": ["probe", "--from", p, "--home", h],
        "config partner-kit --root": ["config", "partner-kit", "--out", str(home / "kit"), "--edge-fqdn",
                                      "mx.example.com", "--domain", "example.com", "--root", p],
    }


def _run(args: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """In a child process with a deadline: a command that blocks on a FIFO fails the test, not hangs it."""
    return subprocess.run([sys.executable, "-m", "certkit", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, "CERTKIT_CA_PASSPHRASE": ""},
                          stdin=subprocess.DEVNULL)


def _assert_refused(code: int, out: str, err: str, expected: str, shown: str) -> None:
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    line = err.strip()
    assert line.startswith("certkit: error: ") and "\n" not in line, err
    assert expected in line, line
    assert shown in line, line  # the message names the file
    assert " Check " in line or " Give " in line or " Point " in line, line  # and says what to do


@pytest.mark.parametrize("kind", sorted(BAD))
def test_every_reader_refuses_in_one_line_with_exit_2(kind: str, short_dir: Path, leaf_pem: bytes) -> None:
    make, expected = BAD[kind]
    good = short_dir / "good.pem"
    good.write_bytes(leaf_pem)
    path = make(short_dir)
    shown = str(path)[:200]
    for name, args in _commands(path, short_dir / "home", good).items():
        if kind in ("fifo", "char device", "symlink to a device") or name.startswith(("lab", "probe")):
            r = _run(args)
            code, out, err = r.returncode, r.stdout, r.stderr
        else:
            res: Result = CliRunner().invoke(main, args, catch_exceptions=False)
            code, out, err = res.exit_code, res.stdout, res.stderr
        try:
            _assert_refused(code, out, err, expected, shown)
        except AssertionError as exc:
            raise AssertionError(f"{name} on a {kind}: {exc}") from None


def test_a_fifo_with_a_writer_is_still_refused_and_nothing_blocks(short_dir: Path) -> None:
    """Even with a writer holding the pipe open (so that a blocking open would succeed) nothing is read."""
    fifo = _fifo(short_dir)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a reader and a writer: the pipe is "open"
    try:
        os.write(fd, b"-----BEGIN CERTIFICATE-----\n")
        r = _run(["inspect", str(fifo)], timeout=20)
        _assert_refused(r.returncode, r.stdout, r.stderr, "named pipe", str(fifo))
        assert os.read(fd, 100) == b"-----BEGIN CERTIFICATE-----\n"  # the data is still in the pipe: unread
    finally:
        os.close(fd)


def test_read_input_never_blocks_on_a_fifo(short_dir: Path) -> None:
    fifo = _fifo(short_dir)
    code = ("import sys\nfrom certkit.adapters.inputs import read_input\nfrom certkit.errors import InputError\n"
            "try:\n    read_input(sys.argv[1])\nexcept InputError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=20)
    assert "is a named pipe (FIFO)" in r.stdout, r


def test_the_right_error_classes(short_dir: Path) -> None:
    with pytest.raises(NotFoundError):
        read_input(short_dir / "missing.pem")
    with pytest.raises(NotFoundError, match=r"symbolic link to .*nowhere"):
        read_input(_dangling(short_dir))
    for make in (_loop, _long, _notdir, _folder, _socket, _fifo, _dev_null):
        with pytest.raises(InputError) as info:
            read_input(make(short_dir))
        assert info.value.exit_code == 2
    with pytest.raises(InputError, match="NUL"):
        read_input("a\x00b")
    with pytest.raises(InputError, match="empty path"):
        read_input("")


def test_reads_stay_bounded(short_dir: Path) -> None:
    big = short_dir / "big.pem"
    big.write_bytes(b"x" * (64 * 1024 + 1))
    with pytest.raises(MalformedInputError, match="64 KiB, too large to be a passphrase file"):
        read_input(big, what="passphrase file", limit=64 * 1024)
    assert read_input(big, limit=64 * 1024 + 1) == b"x" * (64 * 1024 + 1)
    sparse = short_dir / "sparse.pem"
    with open(sparse, "wb") as fh:
        fh.truncate(17 * 1024 * 1024)
    with pytest.raises(MalformedInputError, match="17 MiB"):
        read_input(sparse)


def test_permission_denied_is_one_line(short_dir: Path, leaf_pem: bytes) -> None:
    locked = short_dir / "locked.pem"
    locked.write_bytes(leaf_pem)
    locked.chmod(0)
    if os.geteuid() != 0:
        r = CliRunner().invoke(main, ["inspect", str(locked)])
        _assert_refused(r.exit_code, r.stdout, r.stderr, "permission denied", str(locked))
        return
    # Root reads every file: the command runs without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (util-linux's
    # setpriv), so that the kernel really answers EACCES.
    setpriv = require_tool("setpriv")  # util-linux: without it, root cannot be made to see EACCES
    done = subprocess.run([setpriv, "--bounding-set=-dac_override,-dac_read_search", "--", sys.executable, "-m",
                           "certkit", "inspect", str(locked)], capture_output=True, text=True, timeout=60, cwd=REPO,
                          stdin=subprocess.DEVNULL)
    _assert_refused(done.returncode, done.stdout, done.stderr, "permission denied", str(locked))


def test_an_io_error_while_reading_is_one_line(short_dir: Path, leaf_pem: bytes,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """EIO from the disk. A real one needs a failing block device (device-mapper's error target), which
    this environment does not offer: the read itself fails here, the rest of the path is real."""
    cert = short_dir / "cert.pem"
    cert.write_bytes(leaf_pem)

    def broken_read(fd: int, n: int) -> bytes:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr("certkit.adapters.inputs.os.read", broken_read)
    for args in (["inspect", str(cert)], ["trust", "add", str(cert), "--home", str(short_dir / "h")],
                 ["trust", "verify", str(cert), "--home", str(short_dir / "h")],
                 ["ca", "sign", str(cert), "--home", str(short_dir / "h")]):
        r = CliRunner().invoke(main, args, catch_exceptions=False)
        _assert_refused(r.exit_code, r.stdout, r.stderr, "input/output error", str(cert))
        assert "dmesg" in r.stderr


def test_a_file_name_with_control_characters_is_escaped(short_dir: Path) -> None:
    name = short_dir / "evil\x1b[31m\r\nInjected: line\x07.pem"
    r = CliRunner().invoke(main, ["trust", "add", str(name), "--home", str(short_dir / "h")])
    _assert_refused(r.exit_code, r.stdout, r.stderr, "does not exist", "evil\\x1b[31m\\r\\nInjected: line\\x07.pem")
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr and "\r" not in r.stderr


def test_an_undecodable_file_name_is_shown_escaped(short_dir: Path) -> None:
    raw = os.fsencode(short_dir) + b"/caf\xe9.pem"  # Latin-1 on a UTF-8 system
    r = subprocess.run([sys.executable, "-m", "certkit", "inspect", os.fsdecode(raw)], capture_output=True,
                       timeout=30, cwd=REPO)
    assert r.returncode == 2, r
    assert b"Traceback" not in r.stderr and b"caf\\xe9.pem does not exist" in r.stderr, r.stderr


def test_os_error_for_writes() -> None:
    for code, cls, words in ((errno.ELOOP, InputError, "loop"), (errno.ENAMETOOLONG, InputError, "too long"),
                             (errno.ENOTDIR, InputError, "Check the path"), (errno.EACCES, InputError, "permissions"),
                             (errno.ENOSPC, StoreError, "disk space"), (errno.EIO, StoreError, "dmesg")):
        err = os_error(OSError(code, os.strerror(code)), "out/x\n.pem")
        assert type(err) is cls and words in str(err) and "\n" not in str(err)


def test_writing_through_a_symlink_loop_is_one_line(short_dir: Path) -> None:
    _loop(short_dir)
    r = CliRunner().invoke(main, ["ca", "init", "--name", "X", "--home", str(short_dir / "loop" / "ca")],
                           env={"CERTKIT_CA_PASSPHRASE": "correct horse battery staple"})
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and r.stderr.startswith("certkit: error: ") and r.stderr.count("\n") == 1
