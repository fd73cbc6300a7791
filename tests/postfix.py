"""A real, private Postfix instance on a free loopback port, for interop tests.

Follows ../shared/docs/postfix-lab.md: its own config, queue and data folders under a temporary folder
that the postfix user can traverse; a master.cf without chroot; a maillog file instead of syslog;
nothing ever leaves the machine (every transport is ``error:``). Two shapes:

* ``PostfixInstance(cert, key)``: ``smtpd_tls_security_level = may`` with a CA-signed certificate;
* ``PostfixInstance(cert, key, client_ca=CA)``: ``encrypt`` with ``smtpd_tls_ask_ccert = yes``,
  ``smtpd_tls_req_ccert = yes`` and ``smtpd_tls_CAfile`` (``req_ccert`` is ignored at ``may``).

Needs root (Postfix's own rules) and the Debian package ``postfix``; use :func:`start_postfix` from
a fixture, which skips (or fails under ``CI=true``) when that is not possible.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.pki import PrivateKey

__all__ = ["MASTER_CF", "PostfixInstance", "free_port"]

HOSTNAME = "mx.fabrikam.test"

#: Every service without chroot (Debian's stock file chroots smtpd, which then sees nothing outside the queue).
MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


class PostfixInstance:
    """One private Postfix listening on ``127.0.0.1:port``; :meth:`start` and :meth:`stop` it."""

    def __init__(self, cert: x509.Certificate, key: PrivateKey, chain: Sequence[x509.Certificate] = (), *,
                 client_ca: Sequence[x509.Certificate] = (), hostname: str = HOSTNAME,
                 domain: str = "fabrikam.test") -> None:
        self.hostname = hostname
        self.domain = domain
        self.port = free_port()
        self.require_client_cert = bool(client_ca)
        self.base = Path(tempfile.mkdtemp(prefix="certkit-postfix-"))
        self.base.chmod(0o755)  # the postfix user must traverse it
        self.etc = self.base / "etc"
        self.queue = self.base / "queue"
        self.data = self.base / "data"
        self.mail = self.base / "mail"
        self.maillog = self.base / "maillog"
        for d in (self.etc, self.queue, self.data, self.mail):
            d.mkdir(mode=0o755)
        pf = pwd.getpwnam("postfix")
        os.chown(self.data, pf.pw_uid, pf.pw_gid)
        os.chown(self.mail, pf.pw_uid, pf.pw_gid)
        (self.etc / "server.pem").write_bytes(_pem([cert, *chain]))
        keyfile = self.etc / "server.key"
        keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        keyfile.chmod(0o600)
        (self.etc / "vmailbox").write_text("/.*/ catchall/\n")
        settings = {
            "compatibility_level": "3.6",
            "myhostname": hostname,
            "mydomain": domain,
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.base),
            "mynetworks": "127.0.0.0/8",
            "relayhost": "",
            "smtpd_relay_restrictions": "reject_unauth_destination",
            "default_transport": "error:no mail leaves the test instance",
            "relay_transport": "error:no mail leaves the test instance",
            "local_transport": "error:no local delivery",
            "alias_maps": "",
            "alias_database": "",
            "virtual_mailbox_domains": domain,
            "virtual_mailbox_base": str(self.mail),
            "virtual_mailbox_maps": f"regexp:{self.etc / 'vmailbox'}",
            "virtual_uid_maps": f"static:{pf.pw_uid}",
            "virtual_gid_maps": f"static:{pf.pw_gid}",
            "smtpd_peername_lookup": "no",
            "smtpd_error_sleep_time": "0s",
            "in_flow_delay": "0s",
            "smtpd_tls_cert_file": str(self.etc / "server.pem"),
            "smtpd_tls_key_file": str(keyfile),
            "smtpd_tls_security_level": "may",
            "smtpd_tls_loglevel": "1",
        }
        if client_ca:
            (self.etc / "clientca.pem").write_bytes(_pem(client_ca))
            settings.update({
                # req_ccert is ignored (with only a log warning) unless TLS is mandatory.
                "smtpd_tls_security_level": "encrypt",
                "smtpd_tls_ask_ccert": "yes",
                "smtpd_tls_req_ccert": "yes",
                "smtpd_tls_CAfile": str(self.etc / "clientca.pem"),
            })
        main_cf = self.etc / "main.cf"
        main_cf.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        (self.etc / "master.cf").write_text(MASTER_CF.format(port=self.port))
        # A main.cf changed within the last second makes every postfix command take ~2 s.
        old = time.time() - 10
        for f in self.etc.iterdir():
            os.utime(f, (old, old))
        self.postfix = shutil.which("postfix") or "/usr/sbin/postfix"

    def _run(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.postfix, "-c", str(self.etc), *args], capture_output=True, text=True,
                              timeout=timeout, check=False)

    def start(self, wait: float = 10.0) -> None:
        """Start the instance and wait until it accepts connections; raises with the log on failure."""
        result = self._run("start")
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"Postfix did not start (rc {result.returncode}): {result.stderr}\n{self.log()}")

    def stop(self) -> None:
        """Stop the instance and remove its folder."""
        try:
            self._run("stop", timeout=15)
        except subprocess.TimeoutExpired:
            self._run("abort", timeout=15)
        shutil.rmtree(self.base, ignore_errors=True)

    def log(self) -> str:
        """The instance's maillog so far."""
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, text: str, timeout: float = 5.0) -> str:
        """The maillog once it contains ``text`` (postlogd writes asynchronously), or as it is at ``timeout``."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            log = self.log()
            if text in log or time.monotonic() > deadline:
                return log
            time.sleep(0.05)

    def __enter__(self) -> PostfixInstance:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
