"""DANE-EE key rollover without a gap (RFC 7671 section 8.1, "current + next").

A sender that validates DANE trusts the TLSA RRset its resolver cached, for up to the RRset's TTL. So a
new key may go into service only once *every* cache that could be asked holds an RRset naming it, and
a record may only leave the RRset once no server presents its key any more. Per host, three phases:

``stable``
    The RRset holds the record of the key in use (``current``).
``next-published``
    :meth:`DaneRollover.next` generated the next key (``dane/<host>/next.key`` in the CA home, 0600)
    and said to publish its record alongside the current one. :meth:`DaneRollover.switch` is refused
    until the next record has been *seen* in DNS (through the ``lookup`` callable) and the TTL plus the
    margin have passed since it was first seen: a resolver that fetched the RRset just before the record
    appeared keeps the old RRset (current only) for one TTL; the margin covers secondaries that serve the
    zone later than the server asked, and clocks. The clock starts when certkit first *sees* the record
    (``status`` and ``switch`` look), not when ``next`` printed it: certkit cannot know when the operator
    published, and counting from ``next`` would open a gap whenever the zone was updated late. ``next``
    reports ``now + TTL + margin`` as the earliest possible switch (the record seen at once).
``switched``
    The CA issued a certificate for the next key (a renewal of the current certificate with that key,
    written over the current certificate's files, like ``ca renew --rekey --force``). The RRset still
    holds both records. :meth:`DaneRollover.retire` returns to ``stable`` with the new record alone.

Why retire waits (switch + TTL + margin). Removing a record cannot hurt a resolver that cached it: it
holds a superset. What removal can break is a server that still presents the *old* key to a sender
whose resolver already fetched the new RRset (new record only): another MX host not yet given the new
files, an MTA not yet reloaded, a rollback to the old files. RFC 7671 8.1 drops the old record once the
new key is deployed everywhere; certkit cannot see servers reload, so it keeps the old record for a
deployment window of the TTL plus the margin after the switch -- also one full TTL in which rolling back
to the old certificate stays covered. That is conservative, never needed by DNS caching itself.

Only the DANE-EE ``3 1 1`` record (our public key) changes in a key rollover. A DANE-TA ``2 1 1`` record
for the issuing CA stays as it is. Renewals that keep the key (``ca renew`` without ``--rekey``) keep
the ``3 1 1`` record and need no rollover.

A CA change (``next(to_ca=NEW_HOME)``) takes the same steps. ``next`` asks DNS for the RRset the host
publishes now (``old``) and adds, mirroring its usages, the ``2 1 1`` of the CA certificate of NEW_HOME
that will issue the leaf (its intermediate, else its root) when the RRset holds a ``2 1 1``, and the
``3 1 1`` of the next key when it holds a ``3 1 1`` (``new``). A root the server does not send never
matches a ``2 1 1``: for a ``2 1 1``-only host whose new CA has no intermediate ``next`` is refused; with a
``3 1 1`` too, no ``2 1 1`` is added. ``switch`` waits until DNS shows *every* new record (TTL + margin
after all are first seen), issues a certificate for the same names and the next key from NEW_HOME, writes
it over the current files, and records ``ca_home`` = NEW_HOME: status and retire then look the certificate
in use up there. The old home's record of the old certificate stays (it can still be revoked there) but
gives up the files that now hold the new one. ``retire`` keeps ``new`` and removes the rest of ``old``. Later
rollovers of the host run with NEW_HOME as the home; this home refuses them.

The decisions are pure functions of a :class:`RolloverState` and the time (:func:`records_now`,
:func:`earliest_switch`, :func:`earliest_retire`, :func:`switch_refusal`, :func:`retire_refusal`); time
comes from the CA's clock. The state is ``dane/<host>/state.json`` in the CA home, written atomically
under the CA lock; every step of one host also holds ``dane/<host>/.lock`` (taken before the CA lock).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from certkit.adapters.castore import CertRecord, serial_hex
from certkit.adapters.fs import PRIVATE, PRIVATE_DIR, PUBLIC, atomic_write, file_lock, wipe
from certkit.core.dane import TlsaRecord, Usage, owner_name, tlsa_for, zone_line
from certkit.core.jsonfacts import rfc3339_or_none as _iso
from certkit.core.keys import KeyType, PrivateKey, PublicKey, generate_key, load_private_key, private_key_pem
from certkit.core.names import dns_name
from certkit.core.text import duration_text
from certkit.errors import CertkitError, InputError, MalformedInputError, StoreError, UsageError

if TYPE_CHECKING:
    from certkit.ca import CertificateAuthority, IssuedCertificate, WriteOptions

__all__ = ["DEFAULT_MARGIN", "DEFAULT_TTL", "DaneRollover", "Lookup", "NotReadyError", "Phase", "RolloverState",
           "RolloverStep", "awaited", "earliest_retire", "earliest_switch", "records_now", "retire_refusal",
           "switch_refusal"]

DEFAULT_TTL = 3600
DEFAULT_MARGIN = dt.timedelta(hours=1)
STATE_VERSION = 1

#: ``lookup(owner_name) -> records``: the TLSA RRset at an owner name, or ``None`` when DNS gave no answer.
Lookup = Callable[[str], "Sequence[TlsaRecord] | None"]


class NotReadyError(CertkitError):
    """The rollover may not take this step yet (too early, or the next record is not visible): exit 1."""

    exit_code = 1


class Phase(enum.StrEnum):
    STABLE = "stable"
    NEXT_PUBLISHED = "next-published"
    SWITCHED = "switched"


@dataclass(frozen=True)
class RolloverState:
    """Where the rollover of one host stands. ``current`` is the record of the key in service when the
    rollover started (after ``retire``: the key in service); ``next`` the record of the pending/new key."""

    host: str
    port: int = 25
    phase: Phase = Phase.STABLE
    ttl: int = DEFAULT_TTL
    margin: dt.timedelta = DEFAULT_MARGIN
    current: TlsaRecord | None = None
    next: TlsaRecord | None = None
    #: when ``next`` said to publish the next record
    next_at: dt.datetime | None = None
    #: the first time a lookup found the next record in DNS
    seen_at: dt.datetime | None = None
    switched_at: dt.datetime | None = None
    #: the certificate issued for the next key at the switch
    serial: int | None = None
    retired_at: dt.datetime | None = None
    #: a CA change: the CA home that issues the next certificate (until ``retire``)
    to_ca: str | None = None
    #: the CA home that holds the certificate in use, when it is not this one (after a CA change)
    ca_home: str | None = None
    #: a CA change: the RRset DNS served at ``next`` (``old``) and the records added to it (``new``);
    #: after its ``retire``: ``new`` is the RRset kept
    old: tuple[TlsaRecord, ...] = ()
    new: tuple[TlsaRecord, ...] = ()

    @property
    def wait(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.ttl) + self.margin

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION, "host": self.host, "port": self.port, "phase": str(self.phase),
            "ttl": self.ttl, "margin_seconds": int(self.margin.total_seconds()),
            "current": self.current.text() if self.current else None,
            "next": self.next.text() if self.next else None,
            "next_at": _iso(self.next_at), "seen_at": _iso(self.seen_at), "switched_at": _iso(self.switched_at),
            "serial": serial_hex(self.serial) if self.serial is not None else None,
            "retired_at": _iso(self.retired_at),
            "to_ca": self.to_ca, "ca_home": self.ca_home,
            "old": [r.text() for r in self.old], "new": [r.text() for r in self.new],
        }

    @classmethod
    def from_json(cls, doc: Any, source: str) -> RolloverState:
        try:
            if doc["version"] != STATE_VERSION:
                raise ValueError(f"version {doc['version']!r}")
            return cls(
                host=str(doc["host"]), port=int(doc["port"]), phase=Phase(doc["phase"]), ttl=int(doc["ttl"]),
                margin=dt.timedelta(seconds=int(doc["margin_seconds"])),
                current=TlsaRecord.parse(doc["current"]) if doc["current"] else None,
                next=TlsaRecord.parse(doc["next"]) if doc["next"] else None,
                next_at=_time(doc["next_at"]), seen_at=_time(doc["seen_at"]), switched_at=_time(doc["switched_at"]),
                serial=int(doc["serial"], 16) if doc["serial"] else None, retired_at=_time(doc["retired_at"]),
                to_ca=str(doc["to_ca"]) if doc.get("to_ca") else None,
                ca_home=str(doc["ca_home"]) if doc.get("ca_home") else None,
                old=tuple(TlsaRecord.parse(r) for r in doc.get("old", [])),
                new=tuple(TlsaRecord.parse(r) for r in doc.get("new", [])))
        except (KeyError, TypeError, ValueError, MalformedInputError) as exc:
            raise StoreError(f"The DANE rollover state {source} is damaged ({exc}).",
                             "Restore it from a backup, or remove it to start over from the key in use.") from None


def _time(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


# ---------------------------------------------------------------------------------------------
# the pure decisions


def records_now(state: RolloverState) -> tuple[TlsaRecord, ...]:
    """The records the RRset must hold in this phase: current, then next (a CA change: old, then new;
    stable after a CA change: new)."""
    if state.new:
        return state.new if state.phase is Phase.STABLE else tuple(dict.fromkeys((*state.old, *state.new)))
    return tuple(r for r in (state.current, state.next) if r is not None)


def awaited(state: RolloverState) -> tuple[TlsaRecord, ...]:
    """The records DNS must show before the switch: the next record, or every new record of a CA change."""
    if state.to_ca is not None:
        return state.new
    return (state.next,) if state.next is not None else ()


def earliest_switch(state: RolloverState) -> dt.datetime | None:
    """When the switch becomes allowed: TTL + margin after the next record was first seen in DNS.
    Before it has been seen: ``None`` (see :func:`projected_switch` for the best case)."""
    if state.phase is not Phase.NEXT_PUBLISHED or state.seen_at is None:
        return None
    return state.seen_at + state.wait


def projected_switch(state: RolloverState, now: dt.datetime) -> dt.datetime | None:
    """The earliest switch if the record is seen ``now`` (or when it was seen)."""
    if state.phase is not Phase.NEXT_PUBLISHED:
        return None
    return earliest_switch(state) or max(now, state.next_at or now) + state.wait


def earliest_retire(state: RolloverState) -> dt.datetime | None:
    if state.phase is not Phase.SWITCHED or state.switched_at is None:
        return None
    return state.switched_at + state.wait


def switch_refusal(state: RolloverState, now: dt.datetime, visible: bool | None) -> str | None:
    """Why the switch may not happen ``now`` (``None``: it may). ``visible``: the next record was in the
    RRset DNS returned just now (``None``: DNS gave no answer). ``state.seen_at`` is already updated."""
    if state.phase is Phase.STABLE:
        return "misuse:no next key is pending; run certkit dane rollover next first"
    if state.phase is Phase.SWITCHED:
        return "misuse:the certificate already uses the next key; retire the old record (certkit dane rollover retire)"
    if not visible:
        what = ("DNS gave no answer for" if visible is None else
                "DNS does not show every new record at" if state.to_ca else "DNS does not show the next record at")
        return (f"{what} {owner_name(state.host, state.port)} yet; publish the records of certkit dane rollover "
                "status (current and next) and wait until DNS serves them")
    due = earliest_switch(state)
    assert due is not None  # seen just now at the latest
    if now < due:
        what = "new records were" if state.to_ca else "next record was"
        return (f"too early: the {what} first seen at {_iso(state.seen_at)}, and resolvers may hold the "
                f"RRset without it for the TTL ({state.ttl} s) plus the margin ({duration_text(state.margin)}); switch "
                f"at {_iso(due)} or later")
    return None


def retire_refusal(state: RolloverState, now: dt.datetime) -> str | None:
    if state.phase is Phase.STABLE:
        return "misuse:there is no old record to retire; the rollover is stable"
    if state.phase is Phase.NEXT_PUBLISHED:
        return "misuse:the certificate still uses the current key; switch first (certkit dane rollover switch)"
    due = earliest_retire(state)
    assert due is not None
    if now < due:
        return (f"too early: the switch was at {_iso(state.switched_at)}; keep the old record until every server "
                f"presents the new certificate, for the TTL plus the margin: retire at {_iso(due)} or later")
    return None


def _raise(reason: str) -> NoReturn:
    if reason.startswith("misuse:"):
        message = reason.removeprefix("misuse:")
        what, _, hint = message.partition("; ")
        raise UsageError(what[:1].upper() + what[1:] + ".", hint[:1].upper() + hint[1:] + "." if hint else None)
    what, _, hint = reason.partition("; ")
    raise NotReadyError(what[:1].upper() + what[1:] + ".", hint[:1].upper() + hint[1:] + "." if hint else None)


# ---------------------------------------------------------------------------------------------
# the service


@dataclass(frozen=True)
class RolloverStep:
    """What a step leaves: the state, the records the RRset must hold, what to add and remove."""

    state: RolloverState
    records: tuple[TlsaRecord, ...]
    publish: tuple[TlsaRecord, ...] = ()
    remove: tuple[TlsaRecord, ...] = ()
    #: the certificate in service now (``None`` when the CA has none valid)
    in_use: CertRecord | None = None
    issued: IssuedCertificate | None = None
    #: the next record was in DNS at the last lookup (``None``: not looked up, or no answer)
    visible: bool | None = None
    notes: tuple[str, ...] = field(default=())

    def lines(self, records: Sequence[TlsaRecord], ttl: int | None = None) -> list[str]:
        return [zone_line(r, self.state.host, self.state.port, ttl=ttl) for r in records]


class DaneRollover:
    """The DANE-EE key rollover of ``host`` in the CA home of ``authority`` (see the module docstring)."""

    def __init__(self, authority: CertificateAuthority, host: str, *, port: int = 25) -> None:
        self.authority = authority
        self.host = dns_name(host)
        owner_name(self.host, port)  # checks the port
        self.port = port
        self.folder = authority.home / "dane" / self.host
        self.state_path = self.folder / "state.json"
        self.key_path = self.folder / "next.key"

    # --- storage --------------------------------------------------------------------------------
    def load(self) -> RolloverState:
        """The stored state, or a stable state for a host that never rolled over."""
        try:
            raw = self.state_path.read_bytes()
        except FileNotFoundError:
            return RolloverState(self.host, self.port)
        except OSError as exc:
            raise StoreError(f"Cannot read {self.state_path} ({exc.strerror}).", "Check the CA home.") from None
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise StoreError(f"The DANE rollover state {self.state_path} is damaged ({exc}).",
                             "Restore it from a backup, or remove it to start over from the key in use.") from None
        state = RolloverState.from_json(doc, str(self.state_path))
        if state.host != self.host:
            raise StoreError(f"{self.state_path} is the rollover state of {state.host}, not {self.host}.",
                             "Restore the CA home from a backup.")
        return state

    def _save(self, state: RolloverState) -> None:
        """Write the state atomically under the CA lock (the caller holds the host lock)."""
        with self.authority.locked():
            atomic_write(self.state_path, json.dumps(state.to_json(), indent=2).encode() + b"\n", mode=PUBLIC,
                         overwrite=True)

    @contextlib.contextmanager
    def _host_lock(self) -> Iterator[None]:
        with file_lock(self.folder / ".lock", folder_mode=PRIVATE_DIR):
            yield

    def in_use(self) -> CertRecord:
        """The certificate in service: the newest valid one for the host in the CA home that holds it."""
        home = self.load().ca_home
        if home is None:
            return self.authority.newest_valid(self.host, at=self.authority.clock.now(),
                                               instead="issue one with certkit ca issue")
        with self._other_ca(Path(home)) as other:
            return other.newest_valid(self.host, at=self.authority.clock.now(),
                                      instead="issue one with certkit ca issue")

    @contextlib.contextmanager
    def _other_ca(self, home: Path, passphrase: bytes | None = None) -> Iterator[CertificateAuthority]:
        """Another CA home (a CA change), on this CA's clock."""
        from certkit.ca import CertificateAuthority

        with CertificateAuthority.open(home, passphrase=passphrase, clock=self.authority.clock) as other:
            yield other

    def in_use_or_none(self) -> CertRecord | None:
        try:
            return self.in_use()
        except CertkitError:
            return None

    @staticmethod
    def record_of(cert_or_record: CertRecord) -> TlsaRecord:
        return tlsa_for(cert_or_record.certificate, Usage.DANE_EE)

    # --- reading --------------------------------------------------------------------------------
    def status(self, lookup: Lookup | None = None, *, record_seen: bool = True) -> RolloverStep:
        """The state, the records to have, and the certificate in service. With ``lookup`` in the
        ``next-published`` phase, DNS is asked; the first sighting of the next record starts the switch
        clock (stored when ``record_seen`` and the home is writable)."""
        state = self.load()
        in_use = self.in_use_or_none()
        notes: list[str] = []
        visible: bool | None = None
        if state.phase is Phase.STABLE:
            current = self.record_of(in_use) if in_use is not None else state.current
            state = replace(state, current=current)
        elif lookup is not None:
            visible = self._visible(state, lookup)
            if visible and state.seen_at is None and state.phase is Phase.NEXT_PUBLISHED:
                seen = replace(state, seen_at=self.authority.clock.now())
                if record_seen:
                    try:
                        with self._host_lock():
                            if self.load() == state:
                                self._save(seen)
                    except CertkitError as exc:
                        notes.append(f"the first sighting could not be recorded ({exc.message})")
                        seen = state
                state = seen
        ee = [r for r in records_now(state) if r.usage == Usage.DANE_EE]
        if in_use is not None and ee and self.record_of(in_use) not in ee:
            notes.append(f"the certificate in service (serial {in_use.serial_hex}) matches none of the records: "
                         "its key was changed outside the rollover")
        return RolloverStep(state, records_now(state), in_use=in_use, visible=visible, notes=tuple(notes))

    def _visible(self, state: RolloverState, lookup: Lookup) -> bool | None:
        found = lookup(owner_name(state.host, state.port))
        if found is None:
            return None
        return all(r in found for r in awaited(state)) if state.phase is Phase.NEXT_PUBLISHED else None

    # --- the steps ------------------------------------------------------------------------------
    def next(self, *, ttl: int = DEFAULT_TTL, margin: dt.timedelta = DEFAULT_MARGIN,
             key_type: KeyType | str | None = None, to_ca: Path | None = None,
             lookup: Lookup | None = None) -> RolloverStep:
        """Generate the next key and say to publish its record beside the current one.

        ``to_ca``: a CA change to the CA home ``to_ca`` (see the module docstring); ``lookup`` then gives
        the RRset published now (required).
        """
        _check_wait(ttl, margin)
        with self._host_lock():
            state = self.load()
            if state.phase is not Phase.STABLE:
                _raise(f"misuse:a rollover of {self.host} is already under way ({state.phase}); finish it with "
                       "certkit dane rollover " + ("switch" if state.phase is Phase.NEXT_PUBLISHED else "retire"))
            if state.ca_home is not None:
                _raise(f"misuse:{self.host} moved to the CA in {state.ca_home}; run certkit dane rollover with "
                       f"--home {state.ca_home}")
            in_use = self.in_use()
            current = self.record_of(in_use)
            key = generate_key(key_type or _key_type_of(in_use.certificate.public_key()))
            new = tlsa_for_key(key)
            change = self._ca_change(Path(to_ca), lookup, new) if to_ca is not None else None
            now = self.authority.clock.now()
            with self.authority.locked():
                # A key left by a killed `next` was never reported: it goes.
                if not wipe(self.key_path):
                    raise StoreError(f"Cannot remove the stale {self.key_path}.", "Remove it by hand.")
                atomic_write(self.key_path, private_key_pem(key), mode=PRIVATE)
            state = RolloverState(self.host, self.port, Phase.NEXT_PUBLISHED, ttl, margin, current, new, next_at=now)
            if change is not None:
                state = replace(state, to_ca=change[0], old=change[1], new=change[2])
            self._save(state)
        publish = tuple(r for r in state.new if r not in state.old) if change is not None else (new,)
        return RolloverStep(state, records_now(state), publish=publish, in_use=in_use,
                            notes=change[3] if change is not None else ())

    def _ca_change(self, to_ca: Path, lookup: Lookup | None, next_record: TlsaRecord
                   ) -> tuple[str, tuple[TlsaRecord, ...], tuple[TlsaRecord, ...], tuple[str, ...]]:
        """The new home, the RRset now, the records to add, and notes (refusals raise)."""
        target = to_ca.resolve()
        if target == self.authority.home.resolve():
            _raise(f"misuse:--to-ca {to_ca} is the CA home the host is in already; give the new CA's home")
        owner = owner_name(self.host, self.port)
        found = lookup(owner) if lookup is not None else None
        if found is None:
            _raise(f"DNS gave no answer for {owner}, so the records published now are unknown; ask again later "
                   "(or give --nameserver)")
        old = tuple(dict.fromkeys(found))
        ta = any(r.usage == Usage.DANE_TA for r in old)
        ee = any(r.usage == Usage.DANE_EE for r in old)
        if not ta and not ee:
            _raise(f"misuse:DNS shows no DANE-TA or DANE-EE record at {owner}, so there is nothing to roll over; "
                   "issue from the new CA and publish its records (certkit dane tlsa)")
        with self._other_ca(target) as other:
            issuer, sent = other.issuer, other.has_intermediate
        notes: list[str] = []
        new: list[TlsaRecord] = []
        if ta and sent:
            new.append(tlsa_for(issuer, Usage.DANE_TA))
        elif ta and not ee:
            _raise(f"misuse:the CA in {to_ca} has no intermediate and {self.host} publishes DANE-TA (2 1 1) only, "
                   "which can never match a root the server does not send; add an intermediate to the new CA or "
                   "publish 3 1 1")
        elif ta:
            notes.append(f"the CA in {to_ca} has no intermediate: no 2 1 1 for it (the server does not send its "
                         "root); the 3 1 1 record carries DANE for this host after the retire")
        if ee:
            new.append(next_record)
        if any(r.usage not in (Usage.DANE_TA, Usage.DANE_EE) for r in old):
            notes.append("PKIX-TA/PKIX-EE (0 or 1) records are not rolled over; they are removed at the retire")
        return str(target), old, tuple(new), tuple(notes)

    def switch(self, lookup: Lookup, *, write: WriteOptions | None = None, ttl: int | None = None,
               margin: dt.timedelta | None = None, to_ca_passphrase: bytes | None = None) -> RolloverStep:
        """Put the next key into service: a certificate for it, written over the current one's files.

        Refused (:class:`NotReadyError`) unless ``lookup`` shows the next record and the TTL + margin have
        passed since it was first seen. ``write``: where the files go (default: the folder of the current
        certificate's files, replacing them; no files when it has none). ``ttl``/``margin`` can only
        lengthen the waits stored by ``next``. A CA change issues from the new CA home, unlocked with
        ``to_ca_passphrase``, and records that home as the one holding the certificate in use.
        """
        with self._host_lock():
            state = self._widen(self.load(), ttl, margin)
            now = self.authority.clock.now()
            if state.phase is not Phase.NEXT_PUBLISHED:
                _raise(switch_refusal(state, now, None) or "misuse:nothing to switch")
            in_use = self.in_use()
            if state.to_ca is not None:
                with self._other_ca(Path(state.to_ca)) as other:
                    done = next((r for r in other.records(revoked=False) if r.common_name == in_use.common_name
                                 and r.issued_at >= (state.next_at or now) and self.record_of(r) == state.next),
                                None)
                if done is not None:
                    return self._switched(state, done, None)
            elif self.record_of(in_use) == state.next:
                # A switch that was killed after the certificate was issued: finish it.
                return self._switched(state, in_use, None)
            visible = self._visible(state, lookup)
            if visible and state.seen_at is None:
                state = replace(state, seen_at=now)
                self._save(state)
            reason = switch_refusal(state, now, visible)
            if reason is not None:
                _raise(reason)
            key = self._pending_key()
            if tlsa_for_key(key) != state.next:
                raise StoreError(f"{self.key_path} does not hold the key of the published next record.",
                                 "Restore the CA home from a backup.")
            if state.to_ca is not None:
                with self._other_ca(Path(state.to_ca), to_ca_passphrase) as other:
                    validity = max(1, (in_use.not_after - in_use.not_before).days)
                    issued = other.issue(in_use.common_name, sans=[n for n in in_use.names
                                                                   if n.lower() != in_use.common_name.lower()],
                                         profile=in_use.profile, days=validity, key=key,
                                         write=write or self.default_write(in_use))
                    record = other.get(issued.serial)
                # The files now hold the new CA's certificate: the old home's record gives them up, so no
                # index names a file that holds another certificate.
                taken = set(record.files.values())
                with self.authority.locked():
                    self.authority.index.set_files(in_use.serial, {kind: path for kind, path in in_use.files.items()
                                                                   if path not in taken})
            else:
                issued = self.authority.renew(in_use.serial, key=key, write=write or self.default_write(in_use))
                record = self.authority.get(issued.serial)
            step = self._switched(state, record, issued)
            if any(kind == "pfx" for kind in in_use.files):
                step = replace(step, notes=(f"the old certificate's PFX {in_use.files['pfx']} still holds the old "
                                            "key: make a new one for Windows",))
            return step

    def _switched(self, state: RolloverState, cert: CertRecord, issued: IssuedCertificate | None) -> RolloverStep:
        done = replace(state, phase=Phase.SWITCHED, switched_at=self.authority.clock.now(), serial=cert.serial,
                       ca_home=state.to_ca or state.ca_home)
        self._save(done)
        with self.authority.locked():
            wipe(self.key_path)
        return RolloverStep(done, records_now(done), in_use=cert, issued=issued)

    def retire(self, *, ttl: int | None = None, margin: dt.timedelta | None = None) -> RolloverStep:
        """Drop the old record: back to stable with the new record alone (refused before switch + TTL + margin)."""
        with self._host_lock():
            state = self._widen(self.load(), ttl, margin)
            reason = retire_refusal(state, self.authority.clock.now())
            if reason is not None:
                _raise(reason)
            old = state.current
            done = RolloverState(self.host, self.port, Phase.STABLE, state.ttl, state.margin, state.next,
                                 retired_at=self.authority.clock.now(), ca_home=state.ca_home, new=state.new)
            remove: tuple[TlsaRecord, ...] = (old,) if old is not None else ()
            if state.to_ca is not None:
                remove = tuple(r for r in state.old if r not in state.new)
            self._save(done)
        return RolloverStep(done, records_now(done), remove=remove, in_use=self.in_use_or_none())

    # --- helpers --------------------------------------------------------------------------------
    @staticmethod
    def _widen(state: RolloverState, ttl: int | None, margin: dt.timedelta | None) -> RolloverState:
        _check_wait(ttl if ttl is not None else state.ttl, margin if margin is not None else state.margin)
        return replace(state, ttl=max(state.ttl, ttl or 0), margin=max(state.margin, margin or dt.timedelta(0)))

    def _pending_key(self) -> PrivateKey:
        try:
            data = self.key_path.read_bytes()
        except OSError as exc:
            raise StoreError(f"The next key {self.key_path} cannot be read ({exc.strerror}).",
                             "Restore the CA home from a backup, or start over: remove "
                             f"{self.state_path} and run certkit dane rollover next.") from None
        return load_private_key(data, source=f"the next key {self.key_path}")

    @staticmethod
    def default_write(in_use: CertRecord) -> WriteOptions | None:
        from certkit.ca import WriteOptions

        path = in_use.files.get("crt") or in_use.files.get("chain.pem")
        if not path:
            return None
        return WriteOptions(Path(path).parent, write_key=True, overwrite=True)


def tlsa_for_key(key: PrivateKey | PublicKey) -> TlsaRecord:
    """The DANE-EE ``3 1 1`` record of a key (what :func:`~certkit.core.dane.tlsa_for` gives its certificate)."""
    import hashlib

    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = key if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey) else key.public_key()
    spki = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return TlsaRecord(Usage.DANE_EE, 1, 1, hashlib.sha256(spki).digest())


def _key_type_of(public: Any) -> KeyType:
    from certkit.ca import _key_type_of as of

    return of(public)


def _check_wait(ttl: int, margin: dt.timedelta) -> None:
    if not 0 <= ttl <= 2147483647:
        raise InputError(f"TTL {ttl} is not a DNS TTL.", "Give the TLSA RRset's TTL in seconds (e.g. 3600).")
    if margin < dt.timedelta(0):
        raise InputError("The margin cannot be negative.", "Give e.g. --margin 1h.")
