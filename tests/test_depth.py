"""A path longer than the depth limit, or than a CA's pathLenConstraint allows, has its own finding -- never
'issuer not trusted' with the advice to import a root that is already trusted."""

from __future__ import annotations

import functools

import pytest

from certkit.core.findings import CATALOGUE
from certkit.core.verify import DEFAULT_MAX_DEPTH, VerifyOptions, verify_chain
from tests import pki

NOW = pki.NOW


@functools.cache
def _ladder(n: int) -> tuple[pki.Issued, tuple[pki.Issued, ...], pki.Issued]:
    """A root, ``n`` intermediates each signed by the one above (orgless: no 'same organisation' hint), a leaf."""
    root = pki.make_root("Depth Root", org=None)
    inters: list[pki.Issued] = []
    cur = root
    for k in range(n):
        cur = pki.make_intermediate(cur, f"Depth CA {k}", org=None)
        inters.append(cur)
    return root, tuple(inters), pki.make_leaf(cur, ["mx.fabrikam.com"])


@pytest.mark.parametrize("n", [DEFAULT_MAX_DEPTH + 1, 16, 17, 30])
def test_a_chain_deeper_than_the_limit_is_too_deep_not_untrusted(n: int) -> None:
    root, inters, leaf = _ladder(n)
    r = verify_chain(leaf.cert, [i.cert for i in reversed(inters)], [root.cert], name="mx.fabrikam.com", at=NOW)
    assert not r.ok
    assert list(r.codes) == ["chain.too-deep"]
    assert "chain.unknown-issuer" not in r.codes and "chain.missing-intermediate" not in r.codes
    f = r.findings[0]
    assert f.evidence == {"intermediates": n, "limit": DEFAULT_MAX_DEPTH, "reaches_anchor": True}
    assert f"has {n} intermediate CAs, over the limit of {DEFAULT_MAX_DEPTH}" in f.detail
    assert "CN=Depth Root" in f.detail
    assert r.chain[-1] == root.cert


def test_the_limit_is_the_callers_max_depth() -> None:
    root, inters, leaf = _ladder(3)
    sent = [i.cert for i in inters]
    assert verify_chain(leaf.cert, sent, [root.cert], at=NOW, options=VerifyOptions(max_depth=3)).ok
    r = verify_chain(leaf.cert, sent, [root.cert], at=NOW, options=VerifyOptions(max_depth=2))
    assert list(r.codes) == ["chain.too-deep"]
    assert r.findings[0].evidence["limit"] == 2
    root1, (inter1,), leaf1 = _ladder(1)
    r0 = verify_chain(leaf1.cert, [inter1.cert], [root1.cert], at=NOW, options=VerifyOptions(max_depth=0))
    assert list(r0.codes) == ["chain.too-deep"] and "1 intermediate CA," in r0.findings[0].detail


def test_a_default_depth_chain_is_accepted() -> None:
    root, inters, leaf = _ladder(DEFAULT_MAX_DEPTH)
    assert verify_chain(leaf.cert, [i.cert for i in inters], [root.cert], at=NOW).ok


def test_an_intermediate_not_sent_in_a_long_chain_is_still_missing_not_too_deep() -> None:
    root, inters, leaf = _ladder(DEFAULT_MAX_DEPTH + 2)
    sent = [i.cert for i in inters if i is not inters[3]]
    r = verify_chain(leaf.cert, sent, [root.cert], at=NOW)
    assert not r.ok and "chain.too-deep" not in r.codes
    assert list(r.codes) == ["chain.unknown-issuer"]


def test_path_length_constraint_of_an_intermediate() -> None:
    root = pki.make_root("Root", org=None)
    i1 = pki.make_intermediate(root, "Issuing 1", path_length=0, org=None)
    i2 = pki.make_intermediate(i1, "Issuing 2", org=None)
    leaf = pki.make_leaf(i2, ["mx.fabrikam.com"])
    r = verify_chain(leaf.cert, [i1.cert, i2.cert], [root.cert], at=NOW)
    assert not r.ok and list(r.codes) == ["chain.path-length"]
    f = r.findings[0]
    assert f.subject == "CN=Issuing 1"
    assert f.evidence == {"ca": "CN=Issuing 1", "path_length": 0, "below": ["CN=Issuing 2"]}
    assert "allows no intermediate CA below it (pathLenConstraint 0), but the path has 1" in f.detail
    # The same CA with one intermediate fewer is fine.
    direct = pki.make_leaf(i1, ["mx.fabrikam.com"])
    assert verify_chain(direct.cert, [i1.cert], [root.cert], at=NOW).ok


def test_path_length_constraint_of_the_trust_anchor() -> None:
    root = pki.make_root("Strict Root", org=None, path_length=1)
    i1 = pki.make_intermediate(root, "A", org=None)
    i2 = pki.make_intermediate(i1, "B", org=None)
    leaf = pki.make_leaf(i2, ["mx.fabrikam.com"])
    r = verify_chain(leaf.cert, [i1.cert, i2.cert], [root.cert], at=NOW)
    assert not r.ok and list(r.codes) == ["chain.path-length"]
    assert "at most 1 intermediate CA below it" in r.findings[0].detail


def test_the_new_codes_say_it_is_not_about_trust() -> None:
    for code in ("chain.too-deep", "chain.path-length"):
        entry = CATALOGUE[code]
        assert entry.severity == "error" and entry.tlsrpt_result_type == "validation-failure"
        assert "trust add" not in entry.remedy and "Import" not in entry.remedy
