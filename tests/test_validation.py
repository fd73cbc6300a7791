"""certkit.validation: which CRL downloads a revocation finding rests on."""

from __future__ import annotations

import datetime as dt

from certkit.adapters.crlfetch import CrlCache
from certkit.lab.httpfiles import HttpFiles
from certkit.validation import validate_peer
from tests.pki import make_intermediate, make_leaf, make_root


def test_each_unreachable_finding_names_only_its_own_crl() -> None:
    with HttpFiles() as http:  # nothing served: every CRL is a 404
        url_a, url_b = http.url("leaf-a.crl"), http.url("inter-b.crl")
        root = make_root("Validation Root")
        inter = make_intermediate(root, "Validation CA", cdp=url_b)
        leaf = make_leaf(inter, ["mx.fabrikam.test"], cdp=url_a)
        v = validate_peer(leaf.cert, [inter.cert], [root.cert], crl_source=CrlCache(timeout=3).get,
                          domain="fabrikam.test", at=dt.datetime.now(dt.UTC))
    unreachable = {f.subject: f for f in v.result.findings if f.code == "revocation.unreachable"}
    leaf_f = unreachable[leaf.cert.subject.rfc4514_string()]
    inter_f = unreachable[inter.cert.subject.rfc4514_string()]
    assert url_a in leaf_f.detail and url_b not in leaf_f.detail
    assert [n["url"] for n in leaf_f.evidence["crl_fetch"]] == [url_a]
    assert url_b in inter_f.detail and url_a not in inter_f.detail
    assert [n["url"] for n in inter_f.evidence["crl_fetch"]] == [url_b]
    assert {f.url for f in v.fetches} == {url_a, url_b}
