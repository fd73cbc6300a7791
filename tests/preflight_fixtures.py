"""The pre-flight tests' fixtures (a ``pytest_plugins`` entry): one world per module, Fabrikam's MX per test.

``base`` keeps the world (its PKI, CRL and DNS servers) for a module; ``w`` starts Fabrikam's MX for one test,
stops it afterwards and puts back the world's DNS server if the test replaced it. A module that needs another
world defines its own ``w``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.test_preflight_world import World, world


@pytest.fixture(scope="module")
def base() -> Iterator[World]:
    with world() as found:
        yield found


@pytest.fixture
def w(base: World) -> Iterator[World]:
    """The world with Fabrikam's MX started (trusting our issuing CA); stopped after the test."""
    plain = base.dns
    base.serve()
    yield base
    assert base.server is not None
    base.server.close()
    base.server = None
    if base.dns is not plain:
        base.dns.close()
        base.dns = plain
