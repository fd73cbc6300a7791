"""DANE-EE key rollover (certkit.dane_rollover, ``certkit dane rollover``): no moment without a matching record.

The "DNS" is a dict the test publishes into, with the history of every RRset version; a resolver may
have cached any version that was live during the last TTL, so the records every resolver is sure to
have are those in *all* versions live in ``[now - TTL, now]``. At every tick the certificate in service
(``newest_valid``) must match one of them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509

from certkit.ca import CertificateAuthority, WriteOptions
from certkit.cli import main
from certkit.clock import FixedClock
from certkit.core.dane import TlsaRecord, Usage, owner_name, tlsa_for, zone_line
from certkit.core.formats import load_certificates
from certkit.core.keys import load_private_key
from certkit.dane_rollover import DaneRollover, NotReadyError, Phase, tlsa_for_key
from certkit.errors import UsageError
from tests.dnsserver import DnsServer

HOST = "mx.contoso.test"
OWNER = owner_name(HOST)
START = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
PASS = b"ca secret"


@dataclass
class World:
    home: Path
    out: Path
    clock: FixedClock
    ca: CertificateAuthority
    ttl: int = 3600
    zone: dict[str, list[TlsaRecord]] = field(default_factory=dict)
    #: (from when, the RRset) for every version the zone served
    history: list[tuple[dt.datetime, frozenset[TlsaRecord]]] = field(default_factory=list)
    checks: int = 0

    # --- the DNS --------------------------------------------------------------------------------
    def set_rrset(self, records: Sequence[TlsaRecord]) -> None:
        self.zone[OWNER] = list(records)
        self.history.append((self.clock.now(), frozenset(records)))

    def add(self, records: Sequence[TlsaRecord]) -> None:
        self.set_rrset([*self.zone.get(OWNER, []), *(r for r in records if r not in self.zone.get(OWNER, []))])

    def remove(self, records: Sequence[TlsaRecord]) -> None:
        self.set_rrset([r for r in self.zone.get(OWNER, []) if r not in records])

    def lookup(self, owner: str) -> list[TlsaRecord] | None:
        return list(self.zone[owner]) if owner in self.zone else []

    def cached_everywhere(self) -> frozenset[TlsaRecord]:
        """The records in every RRset version some resolver may still hold (live during the last TTL)."""
        now = self.clock.now()
        since = now - dt.timedelta(seconds=self.ttl)
        live = [rrset for n, (start, rrset) in enumerate(self.history)
                if start <= now and (n + 1 == len(self.history) or self.history[n + 1][0] > since)]
        assert live
        common = live[0]
        for rrset in live[1:]:
            common &= rrset
        return common

    # --- the invariant --------------------------------------------------------------------------
    def in_service(self) -> TlsaRecord:
        rec = self.ca.newest_valid(HOST, at=self.clock.now(), instead="-")
        return tlsa_for(rec.certificate, Usage.DANE_EE)

    def check(self) -> None:
        self.checks += 1
        assert self.in_service() in self.cached_everywhere(), f"gap at {self.clock.now()}"

    def tick(self, delta: dt.timedelta, step: dt.timedelta = dt.timedelta(minutes=5)) -> None:
        end = self.clock.now() + delta
        while self.clock.now() < end:
            self.clock.advance(min(step, end - self.clock.now()))
            self.check()

    def reopen(self) -> None:
        self.ca.close()
        self.ca = CertificateAuthority.open(self.home, passphrase=PASS, clock=self.clock)

    def rollover(self) -> DaneRollover:
        return DaneRollover(self.ca, HOST)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    clock = FixedClock(START)
    ca = CertificateAuthority.init(tmp_path / "ca", name="Contoso Transport CA", passphrase=PASS,
                                   key_type="ec-p256", clock=clock)
    out = tmp_path / "out"
    clock.advance(dt.timedelta(minutes=1))
    ca.issue(HOST, key_type="ec-p256", write=WriteOptions(out))
    w = World(tmp_path / "ca", out, clock, ca)
    # The record of the first key has been in DNS for ages.
    w.zone[OWNER] = [w.in_service()]
    w.history.append((START - dt.timedelta(days=30), frozenset(w.zone[OWNER])))
    try:
        yield w
    finally:
        w.ca.close()


def _try_switch(w: World, ro: DaneRollover) -> bool:
    try:
        ro.switch(w.lookup)
    except NotReadyError:
        return False
    return True


def _try_retire(w: World, ro: DaneRollover) -> bool:
    try:
        step = ro.retire()
    except NotReadyError:
        return False
    w.remove(step.remove)
    return True


@pytest.mark.parametrize(("ttl", "margin_min", "delay_min"), [
    (3600, 60, 0),       # the usual case: published at once
    (300, 0, 0),         # a short TTL, no margin
    (3600, 60, 180),     # the zone updated three hours late: the clock starts when the record is seen
    (86400, 120, 30),    # a day-long TTL
])
def test_many_rollovers_never_leave_a_gap(world: World, ttl: int, margin_min: int, delay_min: int) -> None:
    w = world
    w.ttl = ttl
    margin = dt.timedelta(minutes=margin_min)
    wait = dt.timedelta(seconds=ttl) + margin
    step = max(dt.timedelta(seconds=ttl) / 24, dt.timedelta(minutes=1))
    keys_seen = {w.in_service()}
    for cycle in range(4):
        # Renewals that keep the key keep the record: no rollover needed, no gap.
        w.ca.renew(HOST, write=WriteOptions(w.out, write_key=False, overwrite=True))
        w.check()
        w.tick(step)
        ro = w.rollover()
        start = w.clock.now()
        nxt = ro.next(ttl=ttl, margin=margin)
        assert nxt.state.phase is Phase.NEXT_PUBLISHED
        assert nxt.records == (w.in_service(), nxt.state.next) and nxt.publish == (nxt.state.next,)
        assert nxt.state.next not in keys_seen
        # Not yet published: the switch is refused.
        with pytest.raises(NotReadyError, match="does not show the next record"):
            ro.switch(w.lookup)
        w.tick(dt.timedelta(minutes=delay_min), step)
        w.add(nxt.publish)
        w.check()
        if cycle % 2:
            w.reopen()  # the state lives in the CA home
            ro = w.rollover()
        # The operator checks once (status starts the clock), then tries to switch every step.
        seen = ro.status(w.lookup)
        assert seen.visible is True and seen.state.seen_at == w.clock.now()
        switched = False
        while not switched:
            switched = _try_switch(w, ro)
            if not switched:
                assert w.clock.now() < seen.state.seen_at + wait
                w.tick(step, step)
        assert w.clock.now() >= start + dt.timedelta(minutes=delay_min) + wait
        assert w.in_service() == nxt.state.next
        keys_seen.add(nxt.state.next)
        w.check()
        assert ro.status().state.phase is Phase.SWITCHED
        switched_at = w.clock.now()
        retired = False
        while not retired:
            retired = _try_retire(w, ro)
            if not retired:
                w.tick(step, step)
        assert w.clock.now() >= switched_at + wait
        assert w.zone[OWNER] == [nxt.state.next]
        w.tick(2 * step, step)
        state = w.rollover().status().state
        assert state.phase is Phase.STABLE and state.current == nxt.state.next and state.next is None
    assert len(keys_seen) == 5
    assert w.checks > 20


def test_the_invariant_catches_a_naive_rekey(world: World) -> None:
    """The check is not vacuous: rekeying and publishing the new record at the same moment leaves a gap."""
    w = world
    issued = w.ca.renew(HOST, rekey=True, write=WriteOptions(w.out, overwrite=True))
    w.add([tlsa_for(issued.certificate, Usage.DANE_EE)])
    with pytest.raises(AssertionError, match="gap"):
        w.check()


def test_switch_too_early_and_not_visible(world: World) -> None:
    w = world
    ro = w.rollover()
    nxt = ro.next(ttl=3600, margin=dt.timedelta(hours=1))
    with pytest.raises(NotReadyError, match="does not show the next record"):
        ro.switch(w.lookup)
    with pytest.raises(NotReadyError, match="no answer"):
        ro.switch(lambda owner: None)
    w.tick(dt.timedelta(hours=3))
    # Two hours after `next` would be enough had the record been there: it was not, so the clock starts now.
    w.add(nxt.publish)
    with pytest.raises(NotReadyError, match="Too early") as err:
        ro.switch(w.lookup)
    due = w.clock.now() + dt.timedelta(hours=2)
    assert due.strftime("%Y-%m-%dT%H:%M:%SZ") in str(err.value) and err.value.exit_code == 1
    w.tick(dt.timedelta(hours=2) - dt.timedelta(minutes=5))
    with pytest.raises(NotReadyError, match="Too early"):
        ro.switch(w.lookup)
    w.tick(dt.timedelta(minutes=5))
    step = ro.switch(w.lookup)
    assert step.state.phase is Phase.SWITCHED and step.issued is not None
    w.check()


def test_retire_too_early_and_misuse(world: World) -> None:
    w = world
    w.ttl = 600
    ro = w.rollover()
    with pytest.raises(UsageError, match="No next key is pending") as err:
        ro.switch(w.lookup)
    assert err.value.exit_code == 2
    with pytest.raises(UsageError, match="no old record"):
        ro.retire()
    nxt = ro.next(ttl=600, margin=dt.timedelta(0))
    with pytest.raises(UsageError, match="already under way"):
        ro.next()
    with pytest.raises(UsageError, match="Switch first"):
        ro.retire()
    w.add(nxt.publish)
    ro.status(w.lookup)
    w.tick(dt.timedelta(minutes=10))
    ro.switch(w.lookup)
    with pytest.raises(NotReadyError, match="Too early"):
        ro.retire()
    with pytest.raises(UsageError, match="already uses the next key"):
        ro.switch(w.lookup)
    with pytest.raises(NotReadyError, match="Too early"):
        ro.retire(ttl=3600)  # a longer TTL given later lengthens the wait
    w.tick(dt.timedelta(minutes=10))
    done = ro.retire()
    assert done.remove == (nxt.state.current,) and done.records == (nxt.state.next,)
    w.remove(done.remove)
    w.check()


def test_state_survives_reopening_and_keys_are_private(world: World) -> None:
    w = world
    w.ttl = 60
    nxt = w.rollover().next(ttl=60, margin=dt.timedelta(0))
    key_path = w.home / "dane" / HOST / "next.key"
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(w.home / "dane").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(w.home / "dane" / HOST).st_mode) == 0o700
    assert tlsa_for_key(load_private_key(key_path.read_bytes())) == nxt.state.next
    w.reopen()
    again = w.rollover().status()
    assert again.state == nxt.state and again.records == nxt.records
    w.add(nxt.publish)
    w.rollover().status(w.lookup)
    w.tick(dt.timedelta(minutes=2))
    w.reopen()
    step = w.rollover().switch(w.lookup)
    assert not key_path.exists()  # the key now lives in the certificate's files
    key_file = w.out / f"{HOST}.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert tlsa_for_key(load_private_key(key_file.read_bytes())) == nxt.state.next
    assert step.issued is not None and step.issued.renewed_from is not None
    assert w.ca.get(step.issued.serial).files["crt"].endswith(f"{HOST}.crt")
    w.reopen()
    assert w.rollover().status().state.phase is Phase.SWITCHED


def test_a_switch_killed_after_issuing_is_finished(world: World) -> None:
    w = world
    w.ttl = 60
    ro = w.rollover()
    nxt = ro.next(ttl=60, margin=dt.timedelta(0))
    w.add(nxt.publish)
    ro.status(w.lookup)
    w.tick(dt.timedelta(minutes=2))
    key = load_private_key((w.home / "dane" / HOST / "next.key").read_bytes())
    w.ca.renew(HOST, key=key, write=WriteOptions(w.out, overwrite=True))  # ... and the process died here
    step = ro.switch(w.lookup)
    assert step.state.phase is Phase.SWITCHED and step.issued is None
    assert len([r for r in w.ca.records() if r.common_name == HOST]) == 2


def test_status_reports_a_key_changed_outside_the_rollover(world: World) -> None:
    w = world
    ro = w.rollover()
    ro.next(ttl=60, margin=dt.timedelta(0))
    w.ca.renew(HOST, rekey=True, write=WriteOptions(w.out, overwrite=True))
    assert any("changed outside the rollover" in n for n in ro.status().notes)


# ---------------------------------------------------------------------------------------------
# the command


@pytest.fixture
def live_home(tmp_path: Path) -> Path:
    """A CA whose clock started an hour ago, for the command (which runs on the system clock)."""
    clock = FixedClock(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    home = tmp_path / "live"
    with CertificateAuthority.init(home, name="Contoso Transport CA", passphrase=PASS, key_type="ec-p256",
                                   clock=clock) as ca:
        clock.advance(dt.timedelta(minutes=1))
        ca.issue(HOST, key_type="ec-p256", write=WriteOptions(tmp_path / "out"))
    return home


def test_cli_rollover_through_a_dns_server(live_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command on the system clock: TTL 0 and no margin, DNS from a local authoritative server."""
    monkeypatch.setenv("CERTKIT_CA_PASSPHRASE", PASS.decode())
    runner = CliRunner()
    zone: dict[str, list[str]] = {}
    with DnsServer({OWNER.rstrip("."): {"TLSA": zone.setdefault("TLSA", [])}}, ttl=0) as server:
        base = ["dane", "rollover"]
        opts = [HOST, "--home", str(live_home), "--nameserver", server.address]
        res = runner.invoke(main, [*base, "switch", *opts])
        assert res.exit_code == 2 and res.stderr.count("\n") == 1 and "No next key" in res.stderr
        res = runner.invoke(main, [*base, "next", *opts, "--ttl", "0", "--margin", "0", "--json"])
        assert res.exit_code == 0, res.output
        doc = json.loads(res.stdout)
        assert doc["phase"] == "next-published" and len(doc["records"]) == 2 and len(doc["publish"]) == 1
        res = runner.invoke(main, [*base, "switch", *opts])
        assert res.exit_code == 1 and res.stderr.startswith("certkit: error: DNS does not show")
        assert res.stderr.count("\n") == 1
        for line in doc["records"]:
            zone["TLSA"].append(TlsaRecord.parse(line).text())
        res = runner.invoke(main, [*base, "status", *opts])
        assert res.exit_code == 0 and "next-published" in res.stdout and "seen" in res.stdout
        res = runner.invoke(main, [*base, "switch", *opts])
        assert res.exit_code == 0, res.stderr
        assert res.stdout.splitlines() == doc["records"]
        res = runner.invoke(main, [*base, "retire", *opts])
        assert res.exit_code == 0, res.stderr
        assert res.stdout.splitlines() == [doc["records"][1]]
        assert f"; remove: {doc['records'][0]}" in res.stderr
        res = runner.invoke(main, [*base, "status", *opts, "--json"])
        assert json.loads(res.stdout)["phase"] == "stable"
        res = runner.invoke(main, ["dane", "tlsa", HOST, "--home", str(live_home), "--usage", "ee"])
        assert res.stdout.splitlines() == [zone_line(TlsaRecord.parse(doc["records"][1]), HOST)]


def test_cli_misuse(world: World) -> None:
    w = world
    res = CliRunner().invoke(main, ["dane", "rollover", "next", HOST, "--home", str(w.home), "--margin", "soon"])
    assert res.exit_code == 2 and "--margin" in res.stderr


# ---------------------------------------------------------------------------------------------
# a CA change (next --to-ca): the same steps, with the new CA's DANE-TA record and/or the next key's DANE-EE


NEW_PASS = b"new ca secret"


class CaWorld(World):
    """The certificate in use is what the server presents: the chain file (leaf + intermediate, no root).
    It is covered when a resolver's cache is sure to hold its 3 1 1, or a 2 1 1 of a CA certificate sent."""

    def presented(self) -> list[x509.Certificate]:
        return load_certificates((self.out / f"{HOST}.chain.pem").read_bytes(), source="chain")

    def check(self) -> None:
        self.checks += 1
        chain = self.presented()
        usable = {tlsa_for(chain[0], Usage.DANE_EE), *(tlsa_for(c, Usage.DANE_TA) for c in chain[1:])}
        assert usable & self.cached_everywhere(), f"gap at {self.clock.now()}"


def _ca_world(tmp_path: Path, *, ee: bool, new_intermediate: bool) -> tuple[CaWorld, Path]:
    clock = FixedClock(START)
    ca = CertificateAuthority.init(tmp_path / "ca", name="Contoso Old CA", passphrase=PASS, key_type="ec-p256",
                                   intermediate=True, clock=clock)
    new_home = tmp_path / "new-ca"
    CertificateAuthority.init(new_home, name="Contoso New CA", passphrase=NEW_PASS, key_type="ec-p256",
                              intermediate=new_intermediate, clock=clock).close()
    out = tmp_path / "out"
    clock.advance(dt.timedelta(minutes=1))
    ca.issue(HOST, sans=["mail.contoso.test"], key_type="ec-p256", write=WriteOptions(out))
    w = CaWorld(tmp_path / "ca", out, clock, ca)
    chain = w.presented()
    w.zone[OWNER] = ([tlsa_for(chain[0], Usage.DANE_EE)] if ee else []) + [tlsa_for(chain[1], Usage.DANE_TA)]
    w.history.append((START - dt.timedelta(days=30), frozenset(w.zone[OWNER])))
    w.check()
    return w, new_home


@pytest.mark.parametrize(("ee", "new_intermediate"), [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize(("ttl", "margin_min", "delay_min"), [(3600, 60, 0), (300, 0, 45)])
def test_a_ca_change_never_leaves_a_gap(tmp_path: Path, ee: bool, new_intermediate: bool, ttl: int,
                                        margin_min: int, delay_min: int) -> None:
    w, new_home = _ca_world(tmp_path, ee=ee, new_intermediate=new_intermediate)
    try:
        w.ttl = ttl
        wait = dt.timedelta(seconds=ttl, minutes=margin_min)
        step = max(dt.timedelta(seconds=ttl) / 24, dt.timedelta(minutes=1))
        old_rrset = list(w.zone[OWNER])
        old_serials = {r.serial for r in w.ca.records()}
        ro = w.rollover()
        nxt = ro.next(ttl=ttl, margin=dt.timedelta(minutes=margin_min), to_ca=new_home, lookup=w.lookup)
        st = nxt.state
        assert st.phase is Phase.NEXT_PUBLISHED and st.to_ca == str(new_home.resolve()) and st.ca_home is None
        with CertificateAuthority.open(new_home) as new_ca:
            new_ta = tlsa_for(new_ca.issuer, Usage.DANE_TA)
        expected = ([new_ta] if new_intermediate else []) + ([st.next] if ee else [])
        assert list(nxt.publish) == expected and list(nxt.records) == [*old_rrset, *expected]
        assert bool(nxt.notes) is (not new_intermediate)  # no 2 1 1 for a root nobody sends
        assert stat.S_IMODE(os.stat(w.home / "dane" / HOST / "next.key").st_mode) == 0o600
        with pytest.raises(NotReadyError, match="every new record"):
            ro.switch(w.lookup, to_ca_passphrase=NEW_PASS)
        w.tick(dt.timedelta(minutes=delay_min), step)
        if len(expected) > 1:
            # Half published is not published: the switch waits for every new record.
            w.add(expected[:1])
            w.tick(step, step)
            with pytest.raises(NotReadyError, match="every new record"):
                ro.switch(w.lookup, to_ca_passphrase=NEW_PASS)
        w.add(expected)
        w.check()
        w.reopen()
        ro = w.rollover()
        seen = ro.status(w.lookup)
        assert seen.visible is True and seen.state.seen_at == w.clock.now()
        while True:
            try:
                switched = ro.switch(w.lookup, to_ca_passphrase=NEW_PASS)
                break
            except NotReadyError:
                assert w.clock.now() < seen.state.seen_at + wait
                w.tick(step, step)
        assert w.clock.now() >= seen.state.seen_at + wait
        assert switched.state.phase is Phase.SWITCHED and switched.state.ca_home == st.to_ca
        assert switched.issued is not None
        chain = w.presented()
        with CertificateAuthority.open(new_home) as new_ca:
            assert chain[0].issuer == new_ca.issuer.subject  # issued by the new CA
            assert new_ca.get(switched.issued.serial).names == w.ca.get(min(old_serials)).names
            assert (chain[1:] == [new_ca.issuer]) is new_intermediate
            new_files = set(new_ca.get(switched.issued.serial).files.values())
        # The old home's record of the old certificate gives up the files that now hold the new one.
        assert new_files and all(not new_files & set(r.files.values()) for r in w.ca.records())
        assert tlsa_for(chain[0], Usage.DANE_EE) == st.next
        assert stat.S_IMODE(os.stat(w.out / f"{HOST}.key").st_mode) == 0o600
        assert {r.serial for r in w.ca.records()} == old_serials  # the old home's index is untouched
        assert not (w.home / "dane" / HOST / "next.key").exists()
        w.check()
        # status and retire find the certificate in use in the new home
        assert ro.status().in_use is not None and ro.status().in_use.serial == switched.issued.serial
        switched_at = w.clock.now()
        while True:
            try:
                done = ro.retire()
                break
            except NotReadyError:
                w.tick(step, step)
        assert w.clock.now() >= switched_at + wait
        assert list(done.records) == expected and list(done.remove) == old_rrset
        w.remove(done.remove)
        assert w.zone[OWNER] == expected
        w.tick(wait + step, step)
        w.reopen()
        after = w.rollover().status()
        assert after.state.phase is Phase.STABLE and after.state.ca_home == st.to_ca
        assert list(after.records) == expected and not after.notes
        with pytest.raises(UsageError, match="moved to the CA in"):
            w.rollover().next(to_ca=new_home, lookup=w.lookup)
        # Later rollovers run in the new home, which knows the certificate in use.
        with CertificateAuthority.open(new_home, clock=w.clock) as new_ca:
            assert DaneRollover(new_ca, HOST).status().in_use is not None
        assert w.checks > 10
    finally:
        w.ca.close()


def test_the_invariant_catches_a_naive_ca_change(tmp_path: Path) -> None:
    """Issuing from the new CA and publishing its record at the same moment leaves a gap."""
    w, new_home = _ca_world(tmp_path, ee=False, new_intermediate=True)
    try:
        with CertificateAuthority.open(new_home, passphrase=NEW_PASS, clock=w.clock) as new_ca:
            new_ca.issue(HOST, key_type="ec-p256", write=WriteOptions(w.out, overwrite=True))
            w.add([tlsa_for(new_ca.issuer, Usage.DANE_TA)])
        with pytest.raises(AssertionError, match="gap"):
            w.check()
    finally:
        w.ca.close()


def test_a_ca_change_refused_for_ta_only_without_intermediate(tmp_path: Path) -> None:
    w, new_home = _ca_world(tmp_path, ee=False, new_intermediate=False)
    try:
        ro = w.rollover()
        with pytest.raises(UsageError, match="Add an intermediate to the new CA or publish 3 1 1") as err:
            ro.next(to_ca=new_home, lookup=w.lookup)
        assert err.value.exit_code == 2
        assert ro.status().state.phase is Phase.STABLE and not (w.home / "dane" / HOST / "next.key").exists()
        with pytest.raises(UsageError, match="already"):
            ro.next(to_ca=w.home, lookup=w.lookup)
        with pytest.raises(NotReadyError, match="no answer"):
            ro.next(to_ca=new_home, lookup=lambda owner: None)
        w.ca.close()
        runner = CliRunner()
        with DnsServer({OWNER.rstrip("."): {"TLSA": [r.text() for r in w.zone[OWNER]]}}) as server:
            res = runner.invoke(main, ["dane", "rollover", "next", HOST, "--home", str(w.home), "--to-ca",
                                       str(new_home), "--nameserver", server.address])
        assert res.exit_code == 2 and res.stderr.count("\n") == 1 and "Add an intermediate" in res.stderr
    finally:
        w.ca.close()


def test_cli_ca_change_through_a_dns_server(live_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """next --to-ca, switch (the new CA's passphrase from a file), retire; TTL 0 and no margin."""
    monkeypatch.setenv("CERTKIT_CA_PASSPHRASE", "wrong")
    new_home = tmp_path / "new-ca"
    clock = FixedClock(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    with CertificateAuthority.init(new_home, name="Contoso New CA", passphrase=NEW_PASS, key_type="ec-p256",
                                   intermediate=True, clock=clock) as new_ca:
        new_ta = tlsa_for(new_ca.issuer, Usage.DANE_TA)
    pass_file = tmp_path / "new-pass"
    pass_file.write_bytes(NEW_PASS + b"\n")
    with CertificateAuthority.open(live_home) as ca:
        current = tlsa_for(ca.newest_valid(HOST, at=dt.datetime.now(dt.UTC), instead="-").certificate,
                           Usage.DANE_EE)
    zone = {"TLSA": [current.text()]}
    runner = CliRunner()
    with DnsServer({OWNER.rstrip("."): zone}, ttl=0) as server:
        base = ["dane", "rollover"]
        opts = [HOST, "--home", str(live_home), "--nameserver", server.address]
        res = runner.invoke(main, [*base, "next", *opts, "--to-ca", str(new_home), "--ttl", "0", "--margin", "0",
                                   "--json"])
        assert res.exit_code == 0, res.output
        doc = json.loads(res.stdout)
        assert doc["to_ca"] == str(new_home.resolve()) and len(doc["publish"]) == 1  # EE only: no 2 1 1 added
        assert TlsaRecord.parse(doc["publish"][0]) == TlsaRecord.parse(doc["next"])
        res = runner.invoke(main, [*base, "switch", *opts, "--to-ca-passphrase-file", str(pass_file)])
        assert res.exit_code == 1 and "every new record" in res.stderr and res.stderr.count("\n") == 1
        zone["TLSA"].append(TlsaRecord.parse(doc["publish"][0]).text())
        res = runner.invoke(main, [*base, "switch", *opts, "--to-ca-passphrase-file", str(pass_file)])
        assert res.exit_code == 0, res.stderr
        assert str(new_home.resolve()) in res.stderr
        res = runner.invoke(main, [*base, "status", *opts])
        assert res.exit_code == 0 and "switched" in res.stdout and "CA change to" in res.stdout
        res = runner.invoke(main, [*base, "retire", *opts])
        assert res.exit_code == 0, res.stderr
        assert res.stdout.splitlines() == [doc["publish"][0]] and f"--home {new_home.resolve()}" in res.stderr
        res = runner.invoke(main, ["dane", "tlsa", HOST, "--home", str(new_home), "--usage", "both"])
        assert res.stdout.splitlines()[0] == zone_line(TlsaRecord.parse(doc["publish"][0]), HOST)
        assert res.stdout.splitlines()[1] == zone_line(new_ta, HOST)


def test_cli_switch_waits_for_the_ttl_dns_serves_when_it_is_longer(live_home: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 7671 8.1: the wait is at least the RRset's real TTL. ``next --ttl 0`` but DNS serves the RRset with a
    TTL of 60 s (tests/dnsserver.py): the switch says so and waits those 60 s instead of switching at once."""
    monkeypatch.setenv("CERTKIT_CA_PASSPHRASE", PASS.decode())
    runner = CliRunner()
    zone: dict[str, list[str]] = {}
    with DnsServer({OWNER.rstrip("."): {"TLSA": zone.setdefault("TLSA", [])}}) as server:
        opts = [HOST, "--home", str(live_home), "--nameserver", server.address]
        res = runner.invoke(main, ["dane", "rollover", "next", *opts, "--ttl", "0", "--margin", "0", "--json"])
        assert res.exit_code == 0, res.output
        for line in json.loads(res.stdout)["records"]:
            zone["TLSA"].append(TlsaRecord.parse(line).text())
        assert runner.invoke(main, ["dane", "rollover", "status", *opts]).exit_code == 0
        res = runner.invoke(main, ["dane", "rollover", "switch", *opts])
        assert "DNS serves the TLSA RRset with a TTL of 60 s, longer than the 0 s" in res.stderr, res.stderr
        assert res.exit_code == 1, res.output
