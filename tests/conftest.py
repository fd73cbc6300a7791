"""Shared fixtures: an injected clock, CA homes, and real external tools (skip locally, fail in CI)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from certkit.ca import CertificateAuthority
from certkit.clock import FixedClock

PASS = b"correct horse battery staple"
T0 = dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=dt.UTC)
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def need_tool(name: str) -> str:
    """The path of an external tool; skips when missing locally, fails when missing in CI."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is required in CI but is not installed (.ci/run must install it)")
        pytest.skip(f"{name} is not installed")
    return path


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
