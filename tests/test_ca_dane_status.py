"""``ca status`` shows each host's DANE rollover; ``ca renew --rekey`` refuses to break a host under DANE."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from certkit.ca import CertificateAuthority, WriteOptions
from certkit.cli import main
from certkit.clock import FixedClock
from certkit.core.dane import TlsaRecord, Usage, tlsa_for
from certkit.dane_rollover import DaneRollover, Phase, tlsa_for_key

HOST = "mx.contoso.test"
OTHER = "edge.contoso.test"
PASS = b"ca secret"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A CA (clock started an hour ago: the command runs on the system clock) with two certificates."""
    monkeypatch.setenv("CERTKIT_CA_PASSPHRASE", PASS.decode())
    clock = FixedClock(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    path = tmp_path / "home"
    with CertificateAuthority.init(path, name="Contoso Transport CA", passphrase=PASS, key_type="ec-p256",
                                   clock=clock) as ca:
        clock.advance(dt.timedelta(minutes=1))
        ca.issue(HOST, key_type="ec-p256", write=WriteOptions(tmp_path / "out"))
        ca.issue(OTHER, key_type="ec-p256", write=WriteOptions(tmp_path / "out"))
    return path


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--home", str(home)])


def test_status_without_rollovers_has_an_empty_dane_list(home: Path) -> None:
    res = run(home, "ca", "status", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["dane"] == []
    assert "DANE" not in run(home, "ca", "status").stdout


def test_status_after_rollover_next_shows_the_phase_records_and_switch_time(home: Path) -> None:
    res = run(home, "dane", "rollover", "next", HOST, "--ttl", "600", "--json")
    assert res.exit_code == 0, res.output
    step = json.loads(res.stdout)
    res = run(home, "ca", "status", "--json")
    assert res.exit_code == 0, res.output
    [d] = json.loads(res.stdout)["dane"]
    assert d["host"] == HOST and d["port"] == 25 and d["phase"] == "next-published"
    assert d["records"] == step["records"] and len(d["records"]) == 2
    assert d["next_step"] == "switch" and d["projected"] is True and d["error"] is None
    # Not seen in DNS yet: at the earliest TTL + margin (1 h) from now.
    at = dt.datetime.strptime(d["next_step_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    soonest = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=600 + 3600)
    assert soonest - dt.timedelta(minutes=2) <= at <= soonest + dt.timedelta(minutes=1)
    told = dt.datetime.strptime(step["times"]["projected_switch"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert told <= at <= told + dt.timedelta(minutes=1)  # what `next` said, counted from now
    text = run(home, "ca", "status")
    assert text.exit_code == 0
    lines = text.stdout.splitlines()
    [head] = [line for line in lines if line.startswith(f"  DANE {HOST}")]
    assert "next-published" in head and "switch not before" in head
    assert f"certkit dane rollover status {HOST}" in head
    for record in step["records"]:
        assert f"    {record}" in lines


def test_status_shows_switched_and_stable_hosts(home: Path) -> None:
    clock = FixedClock(dt.datetime.now(dt.UTC))
    with CertificateAuthority.open(home, passphrase=PASS, clock=clock) as ca:
        ro = DaneRollover(ca, HOST)
        published = list(ro.next(ttl=60, margin=dt.timedelta(0)).records)
        clock.advance(dt.timedelta(seconds=1))

        def lookup(owner: str) -> list[TlsaRecord]:
            return published

        ro.status(lookup)  # seen: the switch clock starts
        clock.advance(dt.timedelta(seconds=61))
        switched = ro.switch(lookup)
        assert switched.state.phase is Phase.SWITCHED
        retire_at = switched.state.switched_at + dt.timedelta(seconds=60)  # type: ignore[operator]
        new = tlsa_for(ca.newest_valid(HOST, at=clock.now(), instead="-").certificate, Usage.DANE_EE)
    [d] = json.loads(run(home, "ca", "status", "--json").stdout)["dane"]
    assert d["phase"] == "switched" and d["next_step"] == "retire" and d["projected"] is False
    assert d["next_step_at"] == retire_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert len(d["records"]) == 2 and any(new.text() in line for line in d["records"])
    head = next(line for line in run(home, "ca", "status").stdout.splitlines() if line.startswith("  DANE"))
    assert "switched, retire from" in head
    with CertificateAuthority.open(home, passphrase=PASS, clock=FixedClock(retire_at)) as ca:
        DaneRollover(ca, HOST).retire()
    [d] = json.loads(run(home, "ca", "status", "--json").stdout)["dane"]
    assert d["phase"] == "stable" and d["next_step"] is None and d["next_step_at"] is None
    assert len(d["records"]) == 1 and new.text() in d["records"][0]
    head = next(line for line in run(home, "ca", "status").stdout.splitlines() if line.startswith("  DANE"))
    assert "stable, nothing pending" in head


def test_status_reports_an_unreadable_state_and_goes_on(home: Path) -> None:
    folder = home / "dane" / HOST
    folder.mkdir(parents=True)
    (folder / "state.json").write_text("{not json")
    res = run(home, "ca", "status", "--json")
    assert res.exit_code == 0, res.output
    [d] = json.loads(res.stdout)["dane"]
    assert d["phase"] == "unreadable" and "damaged" in d["error"]
    assert any("state unreadable" in line for line in run(home, "ca", "status").stdout.splitlines())


def _key_record(home: Path, name: str) -> str:
    with CertificateAuthority.open(home) as ca:
        rec = ca.newest_valid(name, at=dt.datetime.now(dt.UTC), instead="-")
        return tlsa_for(rec.certificate, Usage.DANE_EE).text()


def test_renew_rekey_is_refused_while_a_rollover_is_pending_and_allowed_with_the_flag(home: Path,
                                                                                      tmp_path: Path) -> None:
    assert run(home, "dane", "rollover", "next", HOST).exit_code == 0
    before = _key_record(home, HOST)
    out = ["--out", str(tmp_path / "renewed")]
    res = run(home, "ca", "renew", HOST, "--rekey", *out)
    assert res.exit_code == 2, res.output
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("certkit: error: Not changing the key")
    assert f"certkit dane rollover switch {HOST}" in res.stderr and "--ignore-dane" in res.stderr
    assert _key_record(home, HOST) == before  # nothing issued
    # Keeping the key keeps the 3 1 1 record: allowed.
    res = run(home, "ca", "renew", HOST, *out)
    assert res.exit_code == 0, res.output
    assert _key_record(home, HOST) == before
    # Another host without DANE state: rekey as ever.
    assert run(home, "ca", "renew", OTHER, "--rekey", *out).exit_code == 0
    # The flag: rekey anyway; the rollover's status then says the key changed outside it.
    res = run(home, "ca", "renew", HOST, "--rekey", "--ignore-dane", *out, "--force")
    assert res.exit_code == 0, res.output
    assert _key_record(home, HOST) != before
    [d] = json.loads(run(home, "ca", "status", "--json").stdout)["dane"]
    assert any("changed outside the rollover" in n for n in d["notes"])


def test_renew_rekey_is_refused_for_a_stable_host_under_dane(home: Path, tmp_path: Path) -> None:
    """After a finished rollover the host's key is in TLSA: a plain rekey points to rollover next."""
    clock = FixedClock(dt.datetime.now(dt.UTC))
    with CertificateAuthority.open(home, passphrase=PASS, clock=clock) as ca:
        ro = DaneRollover(ca, HOST)
        ro.next(ttl=0, margin=dt.timedelta(0))
        nxt = ro.load().next
        assert nxt is not None
        ro.switch(lambda owner: [nxt])
        ro.retire()
        assert ro.load().phase is Phase.STABLE
        in_use = ca.newest_valid(HOST, at=clock.now(), instead="-")
        assert tlsa_for_key(in_use.certificate.public_key()) == nxt  # type: ignore[arg-type]
    res = run(home, "ca", "renew", HOST, "--rekey", "--out", str(tmp_path / "r"))
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert f"certkit dane rollover next {HOST}" in res.stderr
    # By serial as well as by name.
    with CertificateAuthority.open(home) as ca:
        serial = ca.newest_valid(HOST, at=dt.datetime.now(dt.UTC), instead="-").serial_hex
    res = run(home, "ca", "renew", serial, "--rekey", "--out", str(tmp_path / "r"))
    assert res.exit_code == 2 and "DANE" in res.stderr
