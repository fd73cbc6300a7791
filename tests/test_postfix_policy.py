"""The Domain Security policy engine (sans I/O), its partners file, the generator, and the stdin/stdout driver.

The real-Postfix tests are in test_postfix_inbound.py; here requests are the bytes Postfix sends (the
attributes observed from Postfix 3.7 with ``smtpd_tls_ask_ccert``: ``ccert_subject``/``ccert_issuer``
only for a verified certificate, in xtext, the fingerprints for any certificate).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from certkit.configgen import postfix_inbound
from certkit.core.formats import sha256_fingerprint
from certkit.core.postfix_policy import (
    MAX_ATTRIBUTES,
    MAX_LINE,
    PartnerRule,
    PolicyConnection,
    PolicyTable,
    decide,
    xtext_decode,
)
from certkit.core.trust import Anchor
from certkit.errors import InputError, MalformedInputError
from tests.pki import make_intermediate, make_root, make_self_signed

ROOT = Path(__file__).resolve().parent.parent
FP = "25:BB:A2:1A:13:95:0C:C8:28:73:93:1B:E2:70:DF:CC:F5:7F:66:B8:F6:73:C8:BF:1B:98:3A:49:6B:B9:32:73"
PINNED = "AB" * 32
TABLE = PolicyTable((
    PartnerRule("contoso.com", issuers=frozenset({"Contoso Issuing CA"})),
    PartnerRule("northwind.com", issuers=frozenset({"Northwind Root"}), fingerprints=frozenset({PINNED})),
    PartnerRule("eu.northwind.com", issuers=frozenset({"Northwind EU CA"})),
))


def request(sender: str = "admin@contoso.com", *, tls: bool = True, fingerprint: str = FP,
            issuer: str = "Contoso+20Issuing+20CA", subject: str = "edge.contoso.com",
            pkey: str = "") -> dict[str, str]:
    return {"request": "smtpd_access_policy", "protocol_state": "RCPT", "sender": sender,
            "encryption_protocol": "TLSv1.3" if tls else "", "ccert_fingerprint": fingerprint if tls else "",
            "ccert_issuer": issuer, "ccert_subject": subject, "ccert_pubkey_fingerprint": pkey}


def wire(attrs: dict[str, str]) -> bytes:
    return "".join(f"{k}={v}\n" for k, v in attrs.items()).encode() + b"\n"


# --- the rule ------------------------------------------------------------------------------------------------


def test_partner_certificate_from_its_ca_naming_its_domain_passes() -> None:
    assert decide(request(), TABLE).reason == "accepted"
    assert decide(request(subject="contoso.com"), TABLE).action == "DUNNO"
    assert decide(request(subject="*.mail.contoso.com"), TABLE).action == "DUNNO"


@pytest.mark.parametrize(("req", "reason", "text"), [
    (request(tls=False), "no-tls", "450 4.7.1 partner contoso.com requires TLS and a client certificate"),
    (request(fingerprint=""), "no-certificate", "450 4.7.1 partner contoso.com requires a client certificate"),
    (request(issuer="", subject=""), "not-trusted", "450 4.7.5 partner contoso.com: client certificate not trusted"),
    (request(issuer="Northwind+20Root", subject="edge.northwind.com"), "issuer",
     "450 4.7.5 partner contoso.com: certificate from an issuer contoso.com does not use (Northwind Root)"),
    (request(subject="edge.evilcontoso.com"), "name",
     "450 4.7.5 partner contoso.com: certificate not issued for contoso.com (CN edge.evilcontoso.com)"),
    (request(subject=""), "name", "450 4.7.5 partner contoso.com: certificate not issued for contoso.com (CN missing)"),
])
def test_partner_refusals_name_the_reason(req: dict[str, str], reason: str, text: str) -> None:
    decision = decide(req, TABLE)
    assert decision.reason == reason and decision.refused and decision.partner == "contoso.com"
    assert decision.action.startswith(text) and decision.action.endswith(" (Domain Security)")


def test_senders_map_to_the_most_specific_partner() -> None:
    assert decide(request("x@eu.contoso.com"), TABLE).reason == "accepted"  # a subdomain is the partner's
    assert decide(request("x@CONTOSO.COM."), TABLE).reason == "accepted"
    eu = decide(request("x@de.eu.northwind.com", issuer="Northwind+20Root", subject="edge.northwind.com"), TABLE)
    assert eu.partner == "eu.northwind.com" and eu.reason == "issuer"
    for other in ("x@evilcontoso.com", "x@contoso.com.evil.net", "", "<>", "no-at-sign", "x@[192.0.2.1]",
                  "x@", "x@bad..name", "x@" + "a" * 300):
        assert decide(request(other, tls=False), TABLE).reason == "not-partner", other
    # a quoted local part may hold '@': the domain is after the last one
    assert decide(request('"a@northwind.com"@contoso.com'), TABLE).reason == "accepted"
    # Unicode forms of the partner's domain are the partner's (UTS 46 maps them onto it)
    assert decide(request("x@ｃｏｎｔｏｓｏ.com", tls=False), TABLE).reason == "no-tls"


def test_pinned_certificates_pass_whatever_their_names() -> None:
    pinned = request("x@northwind.com", fingerprint=":".join([PINNED[i:i + 2] for i in range(0, 64, 2)]),
                     issuer="Someone", subject="edge.hosting.example")
    assert decide(pinned, TABLE).reason == "pinned"
    assert decide({**pinned, "ccert_fingerprint": FP, "ccert_pubkey_fingerprint": PINNED.lower()}, TABLE).reason \
        == "pinned"
    # pinned, but Postfix could not verify it: still refused
    assert decide({**pinned, "ccert_issuer": "", "ccert_subject": ""}, TABLE).reason == "not-trusted"
    # one partner's pin is nothing to another
    assert decide({**pinned, "sender": "x@contoso.com"}, TABLE).reason == "issuer"


def test_reply_text_cannot_carry_control_characters_or_grow() -> None:
    decision = decide(request(issuer="Evil+0D+0A250+20OK" + "x" * 500), TABLE)
    assert "\r" not in decision.action and "\n" not in decision.action and decision.action.isascii()
    assert "\\r\\n250 OK" in decision.action and len(decision.action) < 300
    assert decide(request(subject="caf+C3+A9.contoso.com"), TABLE).action.isascii()


def test_xtext() -> None:
    assert xtext_decode("A+20Issuing+2BCA") == "A Issuing+CA"
    assert xtext_decode("caf+C3+A9") == "café"
    assert xtext_decode("bad+ZZ+2") == "bad+ZZ+2"


# --- the protocol ----------------------------------------------------------------------------------------------


def test_one_connection_answers_many_requests_split_anywhere() -> None:
    conn = PolicyConnection(TABLE)
    data = wire(request()) + wire(request(tls=False)) + wire(request("x@example.org", tls=False))
    out = b"".join(conn.receive(data[i:i + 7]) for i in range(0, len(data), 7))
    assert out == (b"action=DUNNO\n\n"
                   b"action=450 4.7.1 partner contoso.com requires TLS and a client certificate (Domain Security)\n\n"
                   b"action=DUNNO\n\n")
    assert [d.reason for d in conn.decisions] == ["accepted", "no-tls", "not-partner"]
    assert not conn.closed


@pytest.mark.parametrize(("data", "problem"), [
    (b"garbage without equals\n\n", "a line without name=value"),
    (b"=value\n\n", "a line without name=value"),
    (b"request=smtpd_access_policy\nsender=a@example.org\nsender=b@contoso.com\n\n", "attribute sender given twice"),
    (b"request=other\nsender=a@example.org\n\n", "not an smtpd_access_policy request"),
    (b"sender=a@example.org\n\n", "not an smtpd_access_policy request"),
    (b"\n", "not an smtpd_access_policy request"),
])
def test_malformed_requests_get_a_clean_refusal_and_the_connection_goes_on(data: bytes, problem: str) -> None:
    conn = PolicyConnection(TABLE)
    out = conn.receive(data)
    assert problem.encode() in out
    assert out.startswith(b"action=451 4.3.5 certkit postfix-policy: malformed request (") and out.endswith(b"\n\n")
    assert out.count(b"\n") == 2 and not conn.closed
    assert conn.receive(wire(request("x@example.org"))) == b"action=DUNNO\n\n"


def test_unknown_attributes_are_ignored_as_the_protocol_says() -> None:
    conn = PolicyConnection(TABLE)
    assert conn.receive(b"request=smtpd_access_policy\n\xff\xfe=\x00\x01\nfuture_attribute=1\n\n") == \
        b"action=DUNNO\n\n"
    assert conn.receive(wire({**request(tls=False), "\x00": "x"})).startswith(b"action=450 4.7.1 ")


def test_hostile_sizes_close_the_connection() -> None:
    conn = PolicyConnection(TABLE)
    out = conn.receive(b"sender=" + b"a" * (MAX_LINE + 10))  # no newline yet: refused before it ends
    assert out == b"action=451 4.3.5 certkit postfix-policy: malformed request (a request line is too long)\n\n"
    assert conn.closed and conn.receive(wire(request())) == b""
    conn = PolicyConnection(TABLE)
    out = conn.receive(b"".join(b"x%d=1\n" % i for i in range(MAX_ATTRIBUTES + 5)))
    assert out.endswith(b"(too many attributes)\n\n") and conn.closed
    conn = PolicyConnection(TABLE)
    out = conn.receive(b"junk\n" * (MAX_ATTRIBUTES + 5))
    assert b"too many attributes" in out and conn.closed


def test_without_a_table_every_request_waits() -> None:
    conn = PolicyConnection(None, table_error="/etc/postfix/certkit-partners.json is missing.\n")
    out = conn.receive(wire(request("x@example.org")))
    assert out == b"action=451 4.3.5 certkit postfix-policy: /etc/postfix/certkit-partners.json is missing.\\n\n\n"


# --- the partners file -----------------------------------------------------------------------------------------


def test_partners_file_round_trips() -> None:
    again = PolicyTable.from_json(TABLE.to_json())
    assert {p.domain: p for p in again.partners} == {p.domain: p for p in TABLE.partners}
    doc = json.loads(TABLE.to_json())
    assert doc["format"] == "certkit-postfix-partners" and doc["fingerprint_digest"] == "sha256"


@pytest.mark.parametrize("data", [
    b"", b"\xff", b"[]", b'{"format": "x", "version": 1, "partners": []}',
    b'{"format": "certkit-postfix-partners", "version": 2, "partners": []}',
    b'{"format": "certkit-postfix-partners", "version": 1}',
    b'{"format": "certkit-postfix-partners", "version": 1, "partners": [{"issuers": []}]}',
    b'{"format": "certkit-postfix-partners", "version": 1, "partners": [{"domain": "a b"}]}',
    b'{"format": "certkit-postfix-partners", "version": 1, "partners": [{"domain": "a.com", "issuers": "x"}]}',
    b'{"format": "certkit-postfix-partners", "version": 1, "partners": [{"domain": "a.com", "fingerprints": ["12"]}]}',
    b'{"format": "certkit-postfix-partners", "version": 1, "partners": [{"domain": "a.com"}, {"domain": "A.com"}]}',
    b"[" * 100000,
])
def test_broken_partners_files_are_refused(data: bytes) -> None:
    with pytest.raises(MalformedInputError):
        PolicyTable.from_json(data)


# --- the generator ---------------------------------------------------------------------------------------------

C_ROOT = make_root("Contoso Root", org="Contoso")
C_CA = make_intermediate(C_ROOT, "Contoso Issuing CA", org="Contoso")
N_ROOT = make_root("Northwind Root", org="Northwind")
N_EDGE = make_self_signed(["edge.northwind.com"])


def anchors() -> list[Anchor]:
    return [Anchor(C_ROOT.cert, partners=("contoso.com",)), Anchor(C_CA.cert, partners=("contoso.com",)),
            Anchor(N_ROOT.cert, partners=("northwind.com",)),
            Anchor(N_EDGE.cert, partners=("northwind.com",), pinned=True)]


def test_generator_writes_every_partner_of_the_store() -> None:
    got = postfix_inbound("contoso.com", anchors=anchors(), ca_bundle=[a.cert for a in anchors()])
    table = PolicyTable.from_json(got.files["certkit-partners.json"])
    assert table == got.table
    rules = {p.domain: p for p in table.partners}
    assert rules["contoso.com"].issuers == {"Contoso Root", "Contoso Issuing CA"}
    assert rules["northwind.com"] == PartnerRule("northwind.com", frozenset({"Northwind Root"}),
                                                 frozenset({sha256_fingerprint(N_EDGE.cert)}))
    settings = [line for line in got.main_cf.splitlines() if line and not line.startswith("#")]
    assert settings == ["smtpd_tls_security_level = may", "smtpd_tls_ask_ccert = yes",
                        "smtpd_tls_CAfile = /etc/postfix/certkit-ca.pem", "smtpd_tls_fingerprint_digest = sha256",
                        "smtpd_sender_restrictions = check_policy_service unix:private/certkit-policy",
                        "certkit-policy_time_limit = 3600s"]
    assert [line for line in got.master_cf.splitlines() if not line.startswith("#")] == [
        "certkit-policy unix - n n - 0 spawn",
        "  user=nobody argv=/usr/local/bin/certkit postfix-policy --partners /etc/postfix/certkit-partners.json"]
    daemon = postfix_inbound("contoso.com", anchors=anchors(), ca_bundle=[], listen="127.0.0.1:10031",
                             config_dir="/srv/pf/")
    assert "smtpd_sender_restrictions = check_policy_service inet:127.0.0.1:10031" in daemon.main_cf.splitlines()
    assert "time_limit" not in daemon.main_cf and "spawn" not in daemon.master_cf.replace("spawn(8)", "")
    assert "--partners /srv/pf/certkit-partners.json --listen 127.0.0.1:10031" in daemon.master_cf


def test_generator_refuses_what_the_policy_could_not_tell_apart() -> None:
    with pytest.raises(InputError, match=r"No anchor in the trust store is tagged for fabrikam\.com"):
        postfix_inbound("fabrikam.com", anchors=anchors(), ca_bundle=[])
    # another trusted CA named like contoso's issuing CA
    twin = make_root("Contoso Issuing CA", org="Mallory")
    with pytest.raises(InputError, match=r"carries the name 'Contoso Issuing CA' of contoso\.com's CA"):
        postfix_inbound("contoso.com", anchors=anchors(), ca_bundle=[a.cert for a in anchors()] + [twin.cert])
    # the same CA shared by two partners is fine: the name rule still tells them apart
    shared = [*anchors(), Anchor(C_ROOT.cert, partners=("northwind.com",))]
    postfix_inbound("contoso.com", anchors=shared, ca_bundle=[a.cert for a in shared])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"policy_command": ["certkit"]}, "not a usable Postfix path"),
    ({"policy_command": ["/usr/bin/certkit", "a\nsmtpd_sender_restrictions ="]}, "blanks or control"),
    ({"policy_command": []}, "empty"),
    ({"user": "root"}, "cannot run the policy service"),
    ({"user": "a b"}, "cannot run the policy service"),
    ({"config_dir": "/etc/postfix\nx = y"}, "control character"),
    ({"listen": "10031"}, "has no address"),
    ({"listen": "127.0.0.1:10031\nx"}, "line break"),
])
def test_generator_refuses_injection(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        postfix_inbound("contoso.com", anchors=anchors(), ca_bundle=[], **kwargs)  # type: ignore[arg-type]


# --- the stdin/stdout driver, as spawn(8) runs it ------------------------------------------------------------


def _run_policy(partners: Path, data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "certkit", "postfix-policy", "--partners", str(partners)],
                          input=data, capture_output=True, timeout=60, check=False, cwd=ROOT)


def test_driver_answers_on_stdout_until_end_of_input(tmp_path: Path) -> None:
    partners = tmp_path / "certkit-partners.json"
    partners.write_bytes(TABLE.to_json())
    done = _run_policy(partners, wire(request()) + wire(request(fingerprint="")))
    assert done.returncode == 0 and done.stderr == b""
    assert done.stdout == (b"action=DUNNO\n\n"
                           b"action=450 4.7.1 partner contoso.com requires a client certificate (Domain Security)\n\n")
    # hostile input: one refusal, then the process ends
    done = _run_policy(partners, b"x" * (MAX_LINE * 4) + b"\n" + wire(request()))
    assert done.returncode == 0 and done.stdout.count(b"action=") == 1 and b"too long" in done.stdout
    # an unreadable table: every request waits, naming the problem
    done = _run_policy(tmp_path / "missing.json", wire(request("x@example.org")))
    assert done.returncode == 0 and done.stdout.startswith(b"action=451 4.3.5 certkit postfix-policy: ")
    assert b"missing.json" in done.stdout
