"""certkit config postfix and certkit preflight against real Postfix.

A sending Postfix with the generated settings delivers to a receiving Postfix that requires our client
certificate (smtpd_tls_req_ccert), and refuses a partner whose certificate does not name the partner
domain. The pre-flight is ready against that receiver, and finds the rejection when it trusts another CA.

Loopback has no MX records, so the sender's transport map points fabrikam.test at [127.0.0.1]:PORT
and the policy entry is keyed by that next hop; its level and match attributes are the generated
ones (``secure match=fabrikam.test:.fabrikam.test``), which is what decides on the certificate.
"""

from __future__ import annotations

import os
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from certkit.checks.preflight import PreflightReport
from certkit.configgen import postfix_config
from tests.fixtures_net import require_postfix
from tests.pki import Issued, make_leaf, make_root
from tests.postfix import PostfixInstance
from tests.test_preflight_world import World, world

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def w() -> Iterator[World]:
    with world() as found:
        yield found


class Sender:
    """Our side: a private Postfix (tests.postfix) configured with certkit's generated settings."""

    def __init__(self, w: World, receiver: PostfixInstance) -> None:
        self.pf = PostfixInstance(w.our_leaf.cert, w.our_leaf.key, [w.our_inter.cert], hostname="edge.contoso.test",
                                  domain="contoso.test")
        etc = self.pf.etc
        cfg = postfix_config("fabrikam.test", ca_bundle=[w.their_root.cert], config_dir=str(etc),
                             cert_file=str(etc / "server.pem"), key_file=str(etc / "server.key"))
        for name, data in cfg.files.items():
            (etc / name).write_bytes(data)
        hop = f"[127.0.0.1]:{receiver.port}"
        entry = "fabrikam.test secure match=fabrikam.test:.fabrikam.test"
        assert entry in cfg.tls_policy.splitlines()
        (etc / "tls_policy").write_text(cfg.tls_policy + entry.replace("fabrikam.test", hop, 1) + "\n")
        (etc / "transport").write_text(f"fabrikam.test smtp:{hop}\n")
        main = etc / "main.cf"
        main.write_text(main.read_text() + cfg.main_cf + "\n".join([
            f"transport_maps = texthash:{etc / 'transport'}",
            "relay_domains = fabrikam.test",
            "smtp_connect_timeout = 5s",
            "",
        ]))
        old = time.time() - 10
        for f in etc.iterdir():
            os.utime(f, (old, old))

    def send(self, to: str = "user@fabrikam.test") -> None:
        with smtplib.SMTP("127.0.0.1", self.pf.port, timeout=10) as s:
            s.sendmail("admin@contoso.test", [to], b"Subject: certkit\r\n\r\nDomain Security test\r\n")


def _delivered(receiver: PostfixInstance, timeout: float = 15.0) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list((receiver.mail / "catchall" / "new").glob("*")) if (receiver.mail / "catchall").exists() else []
        if found:
            return found
        time.sleep(0.1)
    return []


def _receiver(w: World, leaf: Issued) -> PostfixInstance:
    return PostfixInstance(leaf.cert, leaf.key, [w.their_inter.cert], client_ca=[w.our_root.cert, w.our_inter.cert],
                           hostname="mx1.fabrikam.test", domain="fabrikam.test")


def test_generated_settings_deliver_to_a_trusted_partner(w: World) -> None:
    require_postfix()
    receiver = _receiver(w, w.their_leaf)
    with receiver:
        sender = Sender(w, receiver)
        with sender.pf:
            sender.send()
            mail = _delivered(receiver)
            log = sender.pf.wait_for_log("status=sent", timeout=5)
            assert mail, f"not delivered\n--- sender ---\n{log}\n--- receiver ---\n{receiver.log()}"
            assert "Verified TLS connection established to 127.0.0.1" in log, log
            # The receiver requires a client certificate (req_ccert): it verified ours.
            rlog = receiver.wait_for_log("Trusted TLS connection established from", timeout=5)
            assert "Trusted TLS connection established from" in rlog, rlog
            assert "ESMTPS" in mail[0].read_text(errors="replace")

def test_generated_settings_refuse_a_partner_certificate_for_another_domain(w: World) -> None:
    require_postfix()
    wrong = make_leaf(w.their_inter, ["mx1.fabrikam-mail.test"], cdp=w.http.url("fabrikam-issuing.crl"))
    receiver = _receiver(w, wrong)
    with receiver:
        sender = Sender(w, receiver)
        with sender.pf:
            sender.send()
            log = sender.pf.wait_for_log("status=deferred", timeout=15)
            assert "status=deferred" in log, log
            assert "Server certificate not verified" in log or "certificate verification failed" in log, log
            assert not _delivered(receiver, timeout=0.5)


# --- the pre-flight against a real Postfix that requires client certificates ------------------------


def _preflight_against(w: World, receiver: PostfixInstance) -> PreflightReport:
    return w.preflight(port=receiver.port)


def test_preflight_ready_against_real_postfix(w: World) -> None:
    require_postfix()
    with _receiver(w, w.their_leaf) as receiver:
        report = _preflight_against(w, receiver)
    assert report.ready, [(i.finding.code, i.finding.detail) for i in report.items]
    [endpoint] = report.endpoints
    assert endpoint.session is not None and endpoint.session.rcpt is not None and endpoint.session.rcpt.positive


def test_preflight_real_postfix_rejects_us(w: World) -> None:
    require_postfix()
    other = make_root("Somebody Else's Root")
    receiver = PostfixInstance(w.their_leaf.cert, w.their_leaf.key, [w.their_inter.cert], client_ca=[other.cert],
                               hostname="mx1.fabrikam.test", domain="fabrikam.test")
    with receiver:
        report = _preflight_against(w, receiver)
    rejected = [i for i in report.blocking if i.finding.code.startswith("peer.rejected")]
    assert rejected, [(i.finding.code, i.finding.detail) for i in report.items]
    assert "421 4.7.1 mx1.fabrikam.test Error: Client certificate not trusted" in rejected[0].finding.detail
    assert report.exit_code == 1
