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

import pytest

LIMBO = Path(__file__).parent / "limbo"
sys.path.insert(0, str(LIMBO))

import certkit_limbo  # noqa: E402
import run_limbo  # noqa: E402

# CRL cases certkit answers differently from limbo, with the reason. Nothing else may mismatch.
KNOWN_CRL_MISMATCHES = {
    # A CA without a keyUsage extension: cryptography's Web PKI CA policy rejects the path before the
    # CRL is looked at. certkit keeps that rule (Windows and Postfix CAs carry keyUsage).
    "crl::issuer-no-keyusage-extension",
}


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


def test_crl_cases_match_limbo_except_the_documented_one() -> None:
    counts, mismatches = _run("crl")
    unexpected = {k: v for k, v in mismatches.items() if k not in KNOWN_CRL_MISMATCHES}
    assert not unexpected, "\n".join(f"{k}: {v}" for k, v in unexpected.items())
    assert sum(counts.values()) == 6


@pytest.mark.parametrize("case_id", sorted(KNOWN_CRL_MISMATCHES))
def test_known_crl_mismatch_is_still_a_mismatch(case_id: str) -> None:
    # If this starts to pass, remove the case from KNOWN_CRL_MISMATCHES.
    tc = next(t for t in _cases() if t["id"] == case_id)
    actual, _ = run_limbo._evaluate(certkit_limbo.verify, tc)
    assert actual != tc["expected_result"]
