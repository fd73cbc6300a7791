"""Adapter from an x509-limbo test case to certkit's verifier (``--backend certkit_limbo:verify``).

Every case goes through :func:`certkit.core.verify.verify_chain`, the same call the CLI makes; this
module only translates the case's fields. A case that needs something certkit's API cannot express
(signature-algorithm constraints, a non-default EKU, key-usage constraints) is reported as skipped,
never guessed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
from typing import Any

from cryptography import x509

from certkit.core.verify import VerifyOptions, verify_chain
from certkit.errors import CertkitError

Outcome = str | tuple[str, str]


def _certs(pems: list[str]) -> list[x509.Certificate]:
    return [x509.load_pem_x509_certificate(p.encode()) for p in pems]


def verify(tc: dict[str, Any]) -> Outcome:
    """Run one limbo case through certkit; return ``"SUCCESS"``, ``"FAILURE"`` or ``("SKIPPED", why)``."""
    kind = tc["validation_kind"]
    if tc.get("signature_algorithms"):
        return ("SKIPPED", "signature-algorithm constraints not expressible")
    default_eku = {"SERVER": "serverAuth", "CLIENT": "clientAuth"}[kind]
    if tc.get("extended_key_usage") not in (None, [], [default_eku]):
        return ("SKIPPED", f"EKU constraint {tc['extended_key_usage']} not expressible")
    if tc.get("key_usage"):
        return ("SKIPPED", "key-usage constraints not expressible")
    try:
        trusted = _certs(tc["trusted_certs"])
        inter = _certs(tc["untrusted_intermediates"])
        peer = x509.load_pem_x509_certificate(tc["peer_certificate"].encode())
        crls = [x509.load_pem_x509_crl(c.encode()) for c in tc.get("crls") or []]
    except ValueError as exc:  # unparseable input is a rejection
        return ("FAILURE", f"parse error: {exc}")
    at = dt.datetime.fromisoformat(tc["validation_time"]) if tc.get("validation_time") else None
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    name: str | None = None
    if kind == "SERVER":
        pn = tc.get("expected_peer_name")
        if pn is None:
            return ("SKIPPED", "SERVER testcase without expected_peer_name")
        if pn["kind"] not in ("DNS", "IP"):
            return ("SKIPPED", f"server peer name of kind {pn['kind']} not expressible")
        name = pn["value"]
    try:
        options = VerifyOptions(purpose="server" if kind == "SERVER" else "client",
                                max_depth=tc.get("max_chain_depth"), crls=crls)
        result = verify_chain(peer, inter, trusted, name=name, at=at, options=options)
    except CertkitError as exc:  # e.g. a reference name that is not a host name: certkit refuses it
        return ("FAILURE", f"refused: {exc}")
    if not result.ok:
        return ("FAILURE", "; ".join(f"{f.code}: {f.detail}" for f in result.errors))
    if kind == "CLIENT":
        leaf_names: list[x509.GeneralName] = []
        with contextlib.suppress(x509.ExtensionNotFound):
            leaf_names = list(peer.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        for pn in tc.get("expected_peer_names") or []:
            want = {"RFC822": x509.RFC822Name, "DNS": x509.DNSName, "IP": x509.IPAddress}[pn["kind"]]
            value = ipaddress.ip_address(pn["value"]) if pn["kind"] == "IP" else pn["value"]
            if not any(isinstance(s, want) and s.value == value for s in leaf_names):
                return ("FAILURE", f"expected peer name {pn} not among SANs")
    return "SUCCESS"
