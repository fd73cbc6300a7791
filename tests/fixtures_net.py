"""Fixtures and helpers for the network tests: in-test SMTP servers, the loopback DNS server, Postfix.

The fixtures reach every test module through ``pytest_plugins`` in tests/conftest.py: name them as
arguments, never import them. Import the helpers (``require_postfix``, ``ZONES``) as usual.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from certkit.lab.httpfiles import HttpFiles
from tests.dnsserver import DnsServer
from tests.smtp_servers import Handler, SmtpTestServer
from tests.tools import require_tool, unavailable

__all__ = ["ZONES", "dns_server", "http_files", "require_postfix", "smtp_server"]


@pytest.fixture
def smtp_server() -> Iterator[Callable[[Handler], SmtpTestServer]]:
    """A factory: ``smtp_server(handler)`` starts a loopback server, closed after the test."""
    servers: list[SmtpTestServer] = []

    def start(handler: Handler) -> SmtpTestServer:
        srv = SmtpTestServer(handler)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.begin_close()
    for srv in servers:
        srv.close()


#: Test zones served by :func:`dns_server`.
ZONES = {
    "fabrikam.test": {"MX": ["20 mx2.fabrikam.test.", "10 mx1.fabrikam.test."]},
    "mx1.fabrikam.test": {"A": ["127.0.0.1"], "AAAA": ["::1"]},
    "mx2.fabrikam.test": {"A": ["127.0.0.2", "127.0.0.3"]},
    "nomx.test": {"A": ["127.0.0.4"]},
    "nothing.test": {"TXT": ['"v=spf1 -all"']},
    "nullmx.test": {"MX": ["0 ."]},
    "dangling.test": {"MX": ["10 gone.dangling.test."]},
    "slowmx.test": {"MX": ["10 slow.test."]},
    "halfmx.test": {"MX": ["10 gone.halfmx.test.", "20 v4.halfmx.test.", "30 noaddr.halfmx.test."]},
    "v4.halfmx.test": {"A": ["127.0.0.1"]},
    "noaddr.halfmx.test": {"TXT": ['"no address here"']},
}


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    """A loopback DNS server serving :data:`ZONES` (``slow.test`` never answers, ``broken.test`` SERVFAILs)."""
    with DnsServer(ZONES, silent=["slow.test"], servfail=["broken.test"]) as srv:
        yield srv


def require_postfix() -> str:
    """Postfix's ``postfix`` command, if a private instance can run here (root and the package)."""
    path = require_tool("postfix")
    import pwd

    try:
        pwd.getpwnam("postfix")
    except KeyError:
        unavailable("the postfix user does not exist (install the Debian package)")
    if os.geteuid() != 0:
        unavailable("a private Postfix instance needs root")
    return path


@pytest.fixture(scope="module")
def http_files() -> Iterator[HttpFiles]:
    """A loopback HTTP server for CRLs (module-scoped: fill ``.files`` before probing)."""
    with HttpFiles() as srv:
        yield srv
