"""Shared fixtures: an injected clock and CA homes here; the network (SMTP and DNS servers, CRLs over HTTP),
the lab and the DNSSEC lab from the plugin modules below. External tools: tests/tools.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from certkit.ca import CertificateAuthority
from certkit.clock import FixedClock

pytest_plugins = ["tests.fixtures_net", "tests.lab_fixtures", "tests.dnssec_lab", "tests.preflight_fixtures"]

PASS = b"correct horse battery staple"
T0 = dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=dt.UTC)
@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def make_ca(tmp_path: Path, clock: FixedClock) -> Callable[..., CertificateAuthority]:
    """Build CAs in tmp_path (EC P-256 by default, for speed) with the fixed clock."""
    counter = iter(range(1000))

    def factory(**kwargs: object) -> CertificateAuthority:
        home = tmp_path / f"ca{next(counter)}"
        opts: dict[str, object] = {"name": "Contoso Transport CA", "key_type": "ec-p256",
                                   "crl_url": "http://127.0.0.1:1/contoso.crl"}
        opts.update(kwargs)
        return CertificateAuthority.init(home, passphrase=PASS, clock=clock, **opts)  # type: ignore[arg-type]

    return factory


@pytest.fixture
def ca(make_ca: Callable[..., CertificateAuthority]) -> CertificateAuthority:
    return make_ca()
