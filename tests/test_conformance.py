"""x509-limbo conformance: every core case (and the CRL cases) through certkit's verifier.

The data and runner live in ``tests/limbo`` (C2SP x509-limbo, Apache-2.0; see tests/limbo/NOTICE.md),
so the suite never needs anything outside the project.
"""

from __future__ import annotations

import collections
import gzip
import json
import sys
import warnings
from functools import cache
from pathlib import Path
from typing import Any

LIMBO = Path(__file__).parent / "limbo"
sys.path.insert(0, str(LIMBO))

import certkit_limbo  # noqa: E402
import run_limbo  # noqa: E402


@cache
def _cases() -> list[dict[str, Any]]:
    raw = gzip.decompress((LIMBO / "limbo-public.json.gz").read_bytes())
    cases: list[dict[str, Any]] = json.loads(raw)["testcases"]
    return cases


def _run(tier: str) -> tuple[collections.Counter[str], dict[str, str]]:
    """Counts by ``expected/outcome`` and the mismatches by case id."""
    counts: collections.Counter[str] = collections.Counter()
    mismatches: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Parsed a serial number")
        for tc in _cases():
            if run_limbo.tier_of(tc) != tier:
                continue
            actual, context = run_limbo._evaluate(certkit_limbo.verify, tc)
            outcome = "skip" if actual == "SKIPPED" else "pass" if actual == tc["expected_result"] else "fail"
            counts[f"{tc['expected_result']}/{outcome}"] += 1
            if actual != tc["expected_result"]:
                mismatches[tc["id"]] = f"expected {tc['expected_result']}, got {actual} ({context[:120]})"
    return counts, mismatches


def test_every_core_case_matches_limbo() -> None:
    counts, mismatches = _run("core")
    assert not mismatches, "\n".join(f"{k}: {v}" for k, v in mismatches.items())
    assert counts["SUCCESS/pass"] >= 100 and counts["FAILURE/pass"] >= 900, counts
    assert not any(k.endswith("/skip") for k in counts), counts


def test_every_crl_case_matches_limbo() -> None:
    # Including crl::issuer-no-keyusage-extension: a CA without keyUsage is accepted (RFC 5280 6.1.4(n)
    # and 6.3.3(f) check keyUsage only when it is present), while one whose keyUsage lacks keyCertSign
    # (rfc5280::ica-ku-keycertsign, core) or cRLSign (crl::issuer-missing-crlsign) is still refused.
    counts, mismatches = _run("crl")
    assert not mismatches, "\n".join(f"{k}: {v}" for k, v in mismatches.items())
    assert sum(counts.values()) == 6
