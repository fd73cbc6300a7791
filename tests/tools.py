"""External tools and peers the tests need: skipped when missing locally, a failure under ``CI=true``.

CI installs every tool (.ci/run), so a test that cannot run there is a broken CI, not a skip.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

__all__ = ["in_ci", "require_tool", "unavailable"]


def in_ci() -> bool:
    """True when running under CI (``CI=true``): missing peers are failures there, not skips."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip the test because ``reason`` (fail it under ``CI=true``, where everything must run)."""
    if in_ci():
        pytest.fail(f"{reason}; CI must provide it")
    pytest.skip(reason)


def require_tool(name: str, *, paths: tuple[str, ...] = ("/usr/sbin", "/usr/bin", "/sbin")) -> str:
    """The path of the program ``name``; skip the test when it is missing (fail under ``CI=true``)."""
    found = shutil.which(name) or next((os.path.join(p, name) for p in paths
                                        if os.access(os.path.join(p, name), os.X_OK)), None)
    if found:
        return found
    unavailable(f"{name} is not installed (Debian: see .ci/run)")
