"""``certkit watch`` over real sockets: lab SMTP endpoints whose certificate is swapped between cycles, a CA with an
expired certificate, CRLs served over HTTP, ``/metrics`` scraped and parsed with prometheus_client's parser, the
Nagios plugin's codes and output, and the history across cycles with an injected clock."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from certkit.adapters.metrics import MetricsServer, exposition, textfile
from certkit.adapters.truststore import TrustStore
from certkit.adapters.watchdb import WatchHistory
from certkit.ca import CertificateAuthority
from certkit.checks.watch import Watcher, add_target, check, inventory, remove_target, render_summary, summary
from certkit.cli import main
from certkit.clock import FixedClock
from certkit.core.trust import AnchorSet
from certkit.core.watch import CertFacts, NagiosStatus, WatchTarget, compare
from certkit.lab.httpfiles import HttpFiles
from certkit.lab.server import LabConfig, LabServer, Personality, run_in_thread
from tests.pki import Issued, make_leaf, make_root

NAMES = ["mx.fabrikam.test", "fabrikam.test"]
PASS = b"ca-secret"


class Lab:
    """Two roots, three certificates for Fabrikam's MX, and a lab endpoint presenting one of them."""

    def __init__(self) -> None:
        self.root_a = make_root("Fabrikam Root A", fresh_key=True)
        self.root_b = make_root("Fabrikam Root B", fresh_key=True)
        self.first = make_leaf(self.root_a, NAMES, fresh_key=True)
        self.other_issuer = make_leaf(self.root_b, NAMES, fresh_key=True)
        self.rekeyed = make_leaf(self.root_a, NAMES, fresh_key=True)
        self.anchors = AnchorSet.of([self.root_a.cert, self.root_b.cert])
        self.server: LabServer | None = None

    def config(self, leaf: Issued) -> LabConfig:
        return LabConfig(leaf.cert, leaf.key, anchors=self.anchors, personality=Personality.EXCHANGE,
                         validator=Personality.POSTFIX, hostname="mx.fabrikam.test", command_timeout=10.0,
                         handshake_timeout=5.0)

    def present(self, leaf: Issued) -> None:
        assert self.server is not None
        self.server.reconfigure(self.config(leaf))

    @property
    def target(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.port}"


@pytest.fixture
def lab() -> Iterator[Lab]:
    world = Lab()
    with run_in_thread(world.config(world.first)) as server:
        world.server = server
        yield world


def _target(lab: Lab, role: str = "partner") -> WatchTarget:
    return WatchTarget(lab.target, role, "added", {"domain": "fabrikam.test", "validator": "postfix",
                                                   "timeout": 5.0, "dane": "off", "mta_sts": "off"})


def _watcher(home: Path, lab: Lab, clock: FixedClock) -> Watcher:
    return Watcher(home, clock=clock, anchors=lab.anchors, store=TrustStore(home / "trust"))


def _families(body: bytes) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


# --- pure decisions ---------------------------------------------------------------------------------------------


def test_an_issuer_change_of_a_partner_names_the_trust_settings_and_of_ours_the_send_connector() -> None:
    a, b = make_root("A"), make_root("B")
    before, after = CertFacts.of(make_leaf(a, NAMES).cert), CertFacts.of(make_leaf(b, NAMES).cert)
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    theirs = compare(before, after, target="fabrikam.test", endpoint="e", role="partner", at=at)
    assert theirs is not None and theirs.fields[:1] == ("issuer",) and "key" in theirs.fields
    names = [s.name for s in theirs.settings]
    assert any("LocalMachine\\Root" in n for n in names) and "smtp_tls_CAfile" in names
    ours = compare(before, after, target="mail.contoso.com:25", endpoint="e", role="ours", at=at)
    assert ours is not None and ours.settings[0].name.startswith("Set-SendConnector -TlsCertificateName")
    assert "454 4.7.5" in ours.settings[0].action
    assert compare(before, before, target="x", endpoint="e", role="partner", at=at) is None


def test_a_lost_client_auth_points_at_certkit_audit() -> None:
    from cryptography.x509.oid import ExtendedKeyUsageOID

    root = make_root()
    before = CertFacts.of(make_leaf(root, NAMES).cert)
    after = CertFacts.of(make_leaf(root, NAMES, eku=[ExtendedKeyUsageOID.SERVER_AUTH]).cert)
    change = compare(before, after, target="t", endpoint="e", role="partner", at=dt.datetime.now(dt.UTC))
    assert change is not None and "eku:clientAuth" in change.fields
    assert any("certkit audit" in s.action for s in change.settings)


# --- the cycle over real sockets --------------------------------------------------------------------------------


def test_a_partner_certificate_change_is_flagged_with_the_settings_it_affects(lab: Lab, tmp_path: Path) -> None:
    clock = FixedClock(dt.datetime.now(dt.UTC))
    watcher = _watcher(tmp_path, lab, clock)
    with WatchHistory.open(tmp_path) as history:
        add_target(history, _target(lab), clock)
    first = watcher.cycle()
    assert [t.state for t in first.targets] == ["ok"] and not first.changes, first.targets
    assert first.ok

    lab.present(lab.other_issuer)
    clock.advance(dt.timedelta(hours=1))
    second = watcher.cycle()
    [change] = second.changes
    assert change.fields[0] == "issuer" and change.before.thumbprint_sha1 != change.after.thumbprint_sha1
    assert any(s.name == "smtp_tls_CAfile" for s in change.settings)
    assert not second.ok and second.change_counts == {(lab.target, "partner"): 1}

    lab.present(lab.rekeyed)  # back to root A: issuer changes again, then the same issuer with a new key
    clock.advance(dt.timedelta(hours=1))
    watcher.cycle()
    lab.present(lab.first)
    clock.advance(dt.timedelta(hours=1))
    [same_names] = watcher.cycle().changes
    assert same_names.fields == ("key",)  # same issuer and subject: only what pins the key or certificate
    assert {s.product for s in same_names.settings} <= {"postfix", "certkit", "dane"}
    assert "fingerprint" in same_names.settings[0].name

    body, _ = exposition(watcher.last)  # type: ignore[arg-type]
    counter = _families(body)["certkit_partner_certificate_changes"]
    assert [s.value for s in counter.samples if s.name.endswith("_total")] == [3.0]


def test_our_endpoint_renewed_by_another_issuer_names_the_send_connector(lab: Lab, tmp_path: Path) -> None:
    clock = FixedClock(dt.datetime.now(dt.UTC))
    watcher = _watcher(tmp_path, lab, clock)
    with WatchHistory.open(tmp_path) as history:
        add_target(history, _target(lab, "ours"), clock)
    watcher.cycle()
    lab.present(lab.other_issuer)
    [change] = watcher.cycle().changes
    assert change.role == "ours" and 'TlsCertificateName "<I>issuer<S>subject"' in change.settings[0].name


def test_history_keeps_when_each_state_began_across_runs(lab: Lab, tmp_path: Path) -> None:
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    clock = FixedClock(start)
    with WatchHistory.open(tmp_path) as history:
        add_target(history, _target(lab), clock)
    _watcher(tmp_path, lab, clock).cycle()
    clock.advance(dt.timedelta(hours=2))
    second = _watcher(tmp_path, lab, clock).cycle()  # a second run: a new Watcher, the same watch.db
    [t] = second.targets
    assert t.state == "ok" and t.since == start
    assert server_down(lab)
    clock.advance(dt.timedelta(hours=1))
    third = _watcher(tmp_path, lab, clock).cycle()
    assert third.targets[0].state == "unreachable" and third.targets[0].since == start + dt.timedelta(hours=3)
    assert third.targets[0].exit_code == 3
    with WatchHistory.open(tmp_path) as history:
        s = summary(history, clock=clock)
    keys = [(x["key"], x["before"], x["state"]) for x in s.transitions]
    assert (f"target:{lab.target}", "ok", "unreachable") in keys
    text = render_summary(s)
    assert "unreachable since" in text and lab.target in text
    assert "<table>" in render_summary(s, html=True)


def server_down(lab: Lab) -> bool:
    """Stop the lab endpoint: its port refuses from now on."""
    assert lab.server is not None
    loop = lab.server._server.get_loop() if lab.server._server else None  # type: ignore[union-attr]
    assert loop is not None
    import asyncio

    asyncio.run_coroutine_threadsafe(lab.server.stop(), loop).result(10)
    return True


@pytest.fixture
def ca_home(tmp_path: Path) -> Iterator[tuple[Path, CertificateAuthority, HttpFiles]]:
    """A CA whose CRL URL is a loopback HTTP server, with one expired certificate and one valid."""
    with HttpFiles() as http:
        home = tmp_path / "home"
        clock = FixedClock(dt.datetime.now(dt.UTC) - dt.timedelta(days=100))
        ca = CertificateAuthority.init(home, name="Contoso Transport CA", passphrase=PASS, key_type="ec-p256",
                                       crl_url=http.url("contoso.crl"), clock=clock)
        ca.issue("old.contoso.com", key_type="ec-p256", days=30)
        clock.advance(dt.timedelta(days=100))
        ca.issue("mail.contoso.com", key_type="ec-p256", days=90)
        yield home, ca, http
        ca.close()


def test_our_expired_certificate_has_negative_days_and_an_old_served_crl_is_not_current(
        ca_home: tuple[Path, CertificateAuthority, HttpFiles]) -> None:
    home, ca, http = ca_home
    [old] = ca.publish_crl(days=7)
    http.files["/contoso.crl"] = old.der_path.read_bytes()
    [current] = ca.publish_crl(days=7)  # republished at home, but the CDP still serves #old
    assert current.number > old.number
    clock = FixedClock(dt.datetime.now(dt.UTC))
    report = Watcher(home, clock=clock, anchors=()).cycle()
    by_name = {c.name: c for c in report.certificates}
    assert by_name["old.contoso.com"].days_left < -60 and by_name["old.contoso.com"].state == "expired"
    assert 80 < by_name["mail.contoso.com"].days_left < 91
    [crl] = report.crls
    assert crl.served_current is False and crl.served_number == old.number and crl.state == "served-old"
    fams = _families(exposition(report)[0])
    expiry = {s.labels["name"]: s.value for s in fams["certkit_certificate_expiry_days"].samples}
    assert expiry["old.contoso.com"] < -60 and expiry["Contoso Transport CA"] > 3000
    assert [s.value for s in fams["certkit_crl_served_current"].samples] == [0.0]
    assert 6 * 86400 < fams["certkit_crl_next_update_seconds"].samples[0].value <= 7 * 86400

    http.files["/contoso.crl"] = current.der_path
    report = Watcher(home, clock=clock, anchors=()).cycle()
    assert report.crls[0].served_current is True and report.crls[0].state == "fresh"
    assert b"certkit_crl_served_current{" in textfile(report)


def test_watch_run_once_writes_the_textfile_and_json(ca_home: tuple[Path, CertificateAuthority, HttpFiles],
                                                     tmp_path: Path) -> None:
    home, ca, http = ca_home
    [crl] = ca.publish_crl()
    http.files["/contoso.crl"] = crl.der_path
    prom = tmp_path / "textfile" / "certkit.prom"
    result = CliRunner().invoke(main, ["watch", "run", "--once", "--home", str(home), "--textfile", str(prom),
                                       "--json"])
    assert result.exit_code == 1, result.output  # old.contoso.com has expired
    assert '"schema_version": 1' in result.stdout or '"schema_version":1' in result.stdout
    fams = _families(prom.read_bytes())
    assert "certkit_certificate_expiry_days" in fams and "certkit_watch_last_cycle_timestamp_seconds" in fams


# --- the inventory ----------------------------------------------------------------------------------------------


def test_trust_store_partners_are_watched_until_removed(tmp_path: Path) -> None:
    store = TrustStore(tmp_path / "trust")
    store.add(make_root("Fabrikam Root").cert, partners=["fabrikam.test"])
    clock = FixedClock(dt.datetime.now(dt.UTC))
    with WatchHistory.open(tmp_path) as history:
        assert [(t.target, t.source) for t in inventory(history, store)] == [("fabrikam.test", "trust")]
        add_target(history, WatchTarget("127.0.0.1:2525", "ours", "added", {"name": "mail.contoso.test"}), clock)
        remove_target(history, "fabrikam.test", clock, store)
        assert [t.target for t in inventory(history, store)] == ["127.0.0.1:2525"]
        remove_target(history, "127.0.0.1:2525", clock, store)
        assert inventory(history, store) == []
        with pytest.raises(Exception, match="not in the watch inventory"):
            remove_target(history, "nothing.test", clock, store)
    runner = CliRunner()
    home = ["--home", str(tmp_path)]
    assert runner.invoke(main, ["watch", "add", "fabrikam.test", "--validator", "postfix", *home]).exit_code == 0
    listed = runner.invoke(main, ["watch", "list", *home])
    assert "fabrikam.test  partner  added" in listed.output and "--validator postfix" in listed.output
    bad = runner.invoke(main, ["watch", "add", "mx:99999", *home])
    assert bad.exit_code == 2 and "port" in bad.output


# --- watch serve and /metrics -----------------------------------------------------------------------------------


def _get(url: str, timeout: float = 5.0, accept: str | None = None) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()


def test_a_slow_client_does_not_block_a_second_scrape(lab: Lab, tmp_path: Path) -> None:
    clock = FixedClock(dt.datetime.now(dt.UTC))
    watcher = _watcher(tmp_path, lab, clock)
    with WatchHistory.open(tmp_path) as history:
        add_target(history, _target(lab), clock)
    with MetricsServer(lambda: watcher.last, port=0) as server:
        base = f"http://127.0.0.1:{server.port}"
        assert _get(base + "/metrics")[0] == 503 and _get(base + "/healthz")[2] == b"starting\n"
        watcher.cycle()
        with contextlib.ExitStack() as stack:
            for _ in range(5):  # clients that send half a request line and wait
                slow = stack.enter_context(socket.create_connection(("127.0.0.1", server.port)))
                slow.sendall(b"GET /metr")
            status, content_type, body = _get(base + "/metrics", timeout=3)  # a blocked server fails here
            assert status == 200
        assert content_type.startswith("text/plain") and "version=" in content_type
        fams = _families(body)
        [success] = fams["certkit_probe_success"].samples
        assert success.labels == {"target": lab.target, "role": "partner"} and success.value == 1.0
        assert fams["certkit_probe_duration_seconds"].samples[0].value > 0
        assert fams["certkit_probe_exit_code"].samples[0].value == 0.0
        status, content_type, body = _get(base + "/metrics", accept="application/openmetrics-text; version=1.0.0")
        assert content_type.startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")
        assert _get(base + "/healthz")[:2] == (200, "text/plain; charset=utf-8")
        assert _get(base + "/")[0] == 404 and _get(base + "/metrics/../etc/passwd")[0] == 404


def test_watch_serve_listens_on_loopback_and_is_scraped(lab: Lab, tmp_path: Path) -> None:
    runner = CliRunner()
    home = ["--home", str(tmp_path)]
    added = runner.invoke(main, ["watch", "add", lab.target, "--domain", "fabrikam.test", "--validator", "postfix",
                                 "--dane", "off", "--mta-sts", "off", "--timeout", "5", *home])
    assert added.exit_code == 0, added.output
    store = TrustStore(tmp_path / "trust")
    store.add(lab.root_a.cert, partners=["fabrikam.test"])
    proc = subprocess.Popen([sys.executable, "-m", "certkit", "watch", "serve", "--listen", "127.0.0.1:0",
                             "--every", "1h", "--managed-only", *home, "--store", str(tmp_path / "trust")],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line).group(1))  # type: ignore[union-attr]
        assert "non-loopback" not in line
        deadline = time.monotonic() + 30
        while _get(f"http://127.0.0.1:{port}/metrics")[0] == 503 and time.monotonic() < deadline:
            time.sleep(0.2)
        fams = _families(_get(f"http://127.0.0.1:{port}/metrics")[2])
        samples = {s.labels["target"]: s.value for s in fams["certkit_probe_success"].samples}
        assert samples[lab.target] == 1.0 and "fabrikam.test" in samples  # the trust store's partner too
        expiry = fams["certkit_certificate_expiry_days"].samples
        assert any(s.labels["role"] == "partner" and s.labels["name"] == lab.target for s in expiry)
    finally:
        proc.terminate()
        proc.wait(10)


# --- the Nagios plugin ------------------------------------------------------------------------------------------

PERFDATA = re.compile(r"^CERTKIT (OK|WARNING|CRITICAL): .+ \| days_left=-?\d+\.\d\d;30:;7: duration=\d+\.\d{3}s;;;0$")


def _nagios(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, ["watch", "check", *args])
    return result.exit_code, result.output.splitlines()


def test_nagios_check_answers_with_the_plugin_codes_and_perfdata(lab: Lab, tmp_path: Path) -> None:
    TrustStore(tmp_path / "trust").add(lab.root_a.cert, partners=["fabrikam.test"])
    opts = ["--domain", "fabrikam.test", "--validator", "postfix", "--dane", "off", "--managed-only", "--timeout",
            "5", "--home", str(tmp_path)]
    code, lines = _nagios(lab.target, *opts)
    assert code == 0 and PERFDATA.match(lines[0]) and lines[0].startswith("CERTKIT OK: "), lines
    code, lines = _nagios(lab.target, *opts, "--warning", "400d", "--critical", "1")
    assert code == 1 and lines[0].startswith("CERTKIT WARNING: ") and "expires in" in lines[0], lines
    code, lines = _nagios(lab.target, *opts, "--critical", "400d")
    assert code == 2 and lines[0].startswith("CERTKIT CRITICAL: "), lines
    code, lines = _nagios(lab.target, "--domain", "contoso.test", *opts[2:])
    assert code == 2 and "would fail" in lines[0], lines  # the name rule fails
    code, lines = _nagios("127.0.0.1:1", *opts)
    assert code == 2 and "nothing could be reached" in lines[0], lines
    code, lines = _nagios(lab.target, "--no-such-option")
    assert code == 3 and lines[0].startswith("CERTKIT UNKNOWN: "), lines
    code, lines = _nagios("mx:99999", *opts)
    assert code == 3 and lines[0].startswith("CERTKIT UNKNOWN: "), lines


def test_nagios_check_warns_about_a_change_since_the_last_cycle(lab: Lab, tmp_path: Path) -> None:
    clock = FixedClock(dt.datetime.now(dt.UTC))
    target = _target(lab)
    with WatchHistory.open(tmp_path) as history:
        add_target(history, target, clock)
    _watcher(tmp_path, lab, clock).cycle()
    lab.present(lab.other_issuer)
    with WatchHistory.open(tmp_path) as history:
        result = check(target, anchors=lab.anchors, clock=clock, history=history)
    assert result.status is NagiosStatus.WARNING and "changed (issuer" in result.text
    assert any("smtp_tls_CAfile" in line for line in result.details)


def test_a_damaged_history_is_named_as_the_watch_history_not_the_ca(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "watch.db").write_bytes(b"this is not an SQLite database" * 100)
    result = CliRunner().invoke(main, ["watch", "list", "--home", str(home)])
    assert result.exit_code == 1, result.output  # a damaged store, as for the CA index
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in result.output
    assert "watch history" in line and "damaged" in line and "CA index" not in line, line
