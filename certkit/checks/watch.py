"""Watching the estate on a schedule: the inventory, one cycle of checks, the Nagios check and the daily summary.

The inventory (:func:`inventory`) is what ``certkit watch add`` put in the history (``watch.db`` in the home,
:class:`~certkit.adapters.watchdb.WatchHistory`) plus every partner domain of the trust store (taken out with
``watch remove``); our CA's certificates are watched without being listed. One cycle (:meth:`Watcher.cycle`):

1. our CA's certificates -- the root, the issuing CA, and the newest unrevoked certificate of each name -- by
   days to expiry (negative once expired);
2. our CRLs -- seconds to nextUpdate, and the CRL served at the distribution point URL fetched
   (:func:`certkit.adapters.crlfetch.fetch_crl`) and compared with ours by CRL number: a CDP still serving an
   older CRL lapses when that one does, whatever we published;
3. every target probed through :func:`certkit.checks.probe.probe_sync` with its own options, and each
   certificate presented compared with the one the same endpoint presented last
   (:func:`certkit.core.watch.compare`: which fields changed and the settings that rely on them).

Each state is kept with the time it began (``since``), so an admin sees "failing since 03:12". Time comes from
the injected :class:`~certkit.clock.Clock`; nothing here prints.
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from certkit.adapters.crlfetch import CrlFetch, fetch_crl
from certkit.adapters.transport import ClientIdentity
from certkit.adapters.truststore import TrustStore, default_store_path
from certkit.adapters.watchdb import StateRow, WatchHistory
from certkit.checks.probe import AddressResult, ProbeOptions, ProbeResult, exit_code, parse_target, probe_sync
from certkit.clock import Clock, SystemClock
from certkit.core.jsonfacts import rfc3339
from certkit.core.names import dns_name
from certkit.core.watch import (
    CertFacts,
    CertificateState,
    Change,
    CrlState,
    CycleReport,
    NagiosResult,
    TargetState,
    WatchTarget,
    compare,
    crl_state,
    days_left,
    expiry_state,
    nagios_verdict,
)
from certkit.errors import CertkitError, InputError, NotFoundError

__all__ = ["OPTION_NAMES", "WatchSummary", "Watcher", "add_target", "check", "inventory", "probe_options",
           "remove_target", "render_summary", "summary"]

#: The probe options a target may carry (the :class:`ProbeOptions` field names), and ``as_name``.
OPTION_NAMES = ("port", "implicit_tls", "validator", "domain", "name", "mail_from", "rcpt_to", "helo_name",
                "nameserver", "timeout", "dane", "mta_sts", "as_name")


def probe_options(target: WatchTarget) -> ProbeOptions:
    """The target's :class:`ProbeOptions` (checked: a bad option is an :class:`InputError` or ``UsageError``)."""
    opts = {k: v for k, v in target.options.items() if k != "as_name"}
    unknown = set(opts) - set(OPTION_NAMES)
    if unknown:
        raise InputError(f"The watch target {target.target} has unknown options: {', '.join(sorted(unknown))}.",
                         "Remove it (certkit watch remove) and add it again.")
    return ProbeOptions(**opts)


def _checked(target: WatchTarget) -> WatchTarget:
    parse_target(target.target, int(target.options.get("port", 25)))
    probe_options(target)
    return target


def add_target(history: WatchHistory, target: WatchTarget, clock: Clock) -> bool:
    """Put ``target`` in the inventory (replacing its options if it was there); true when it is new."""
    return history.add_target(_checked(target), clock.now())


def remove_target(history: WatchHistory, target: str, clock: Clock, store: TrustStore | None = None) -> None:
    """Take ``target`` out: an added target is deleted, a trust store partner is excluded from now on."""
    if history.remove_target(target):
        return
    if target in _trust_partners(store):
        history.exclude(target, clock.now())
        return
    raise NotFoundError(f"{target} is not in the watch inventory.", "See certkit watch list.")


def _trust_partners(store: TrustStore | None) -> list[str]:
    if store is None:
        return []
    partners: set[str] = set()
    for entry in store.entries():
        for p in entry.get("partners") or ():
            try:
                partners.add(dns_name(str(p)))
            except InputError:
                continue
    return sorted(partners)


def inventory(history: WatchHistory, store: TrustStore | None = None) -> list[WatchTarget]:
    """The targets added, then each partner domain of the trust store not added or taken out (role partner,
    the probe's defaults)."""
    added = history.targets()
    names = {t.target for t in added} | history.excluded()
    return [*added, *(WatchTarget(p, "partner", "trust") for p in _trust_partners(store) if p not in names)]


# --- one cycle -------------------------------------------------------------------------------------------------


def _endpoint(a: AddressResult) -> str:
    return f"{a.host}[{a.address}]:{a.port}" if a.host != a.address else f"[{a.address}]:{a.port}"


def _verdict(r: ProbeResult, code: int) -> str:
    if code == 3:
        return "nothing could be reached"
    failing = next((a for a in r.addresses if not a.ok), None)
    if failing is not None:
        return failing.verdict
    error = next((f for f in r.findings if str(f.severity) == "error"), None)
    if error is not None:
        return f"would fail: {error.entry.title}"
    if r.mta_sts is not None and not r.mta_sts.ok:
        return "MTA-STS senders would not deliver"
    return r.addresses[0].verdict if r.addresses else "no address"


def _leaf(a: AddressResult) -> x509.Certificate | None:
    tls = a.session.tls if a.session is not None else None
    return tls.peer_chain[0] if tls is not None and tls.peer_chain else None


@dataclass
class Watcher:
    """The cycle over one home: ``anchors`` judge the targets (default: the home's trust store and the public
    roots), ``identity_for`` gives our client certificate for a target's ``as_name`` (default: the CA's, with
    ``key_passphrase``), ``warn_days`` marks a certificate ``expiring``."""

    home: Path
    clock: Clock = field(default_factory=SystemClock)
    anchors: Any = None
    store: TrustStore | None = None
    key_passphrase: bytes | None = None
    warn_days: float = 30.0
    crl_timeout: float = 5.0
    probe: bool = True
    #: the last cycle's report (``watch serve`` answers scrapes from it)
    last: CycleReport | None = None

    def __post_init__(self) -> None:
        self.home = Path(self.home)
        if self.store is None:
            self.store = TrustStore(default_store_path(self.home))
        if self.anchors is None:
            self.anchors = self.store.anchor_set()

    def cycle(self) -> CycleReport:
        """Run every check once, record the states and changes, and return what was seen."""
        started = time.monotonic()
        at = self.clock.now()
        with WatchHistory.open(self.home) as history:
            certificates, crls = self._ours(history, at)
            targets: list[TargetState] = []
            changes: list[Change] = []
            if self.probe:
                for target, result, seconds in self._probe(inventory(history, self.store), at):
                    state, seen, changed = self._judge(history, target, result, seconds, at)
                    targets.append(state)
                    certificates += seen
                    changes += changed
            counts = history.change_counts()
        report = CycleReport(at, time.monotonic() - started, tuple(certificates), tuple(crls), tuple(targets),
                             tuple(changes), counts)
        self.last = report
        return report

    # our CA ----------------------------------------------------------------------------------------------------

    def _ours(self, history: WatchHistory, at: _dt.datetime) -> tuple[list[CertificateState], list[CrlState]]:
        from certkit.ca import CertificateAuthority

        try:
            authority = CertificateAuthority.open(self.home, clock=self.clock)
        except NotFoundError:
            return [], []  # no CA in this home: only targets are watched
        with authority:
            certs = [authority.root, *authority.intermediates]
            newest: dict[str, Any] = {}
            for rec in authority.records(revoked=False):
                if rec.common_name not in newest or rec.not_after > newest[rec.common_name].not_after:
                    newest[rec.common_name] = rec
            certs += [rec.certificate for _, rec in sorted(newest.items())]
            states = [self._certificate(history, "ours", _cn(c), CertFacts.of(c), at,
                                        key=f"certificate:ca:{c.serial_number:x}") for c in certs]
            issuers = {"ca": authority.issuer, "root": authority.root}
            crls = [self._crl(history, info, issuers.get(info.issuer), at) for info in authority.crl_info()]
        return states, crls

    def _certificate(self, history: WatchHistory, role: str, name: str, facts: CertFacts, at: _dt.datetime, *,
                     key: str, target: str | None = None, endpoint: str | None = None) -> CertificateState:
        left = days_left(facts.not_after, at)
        state = expiry_state(left, self.warn_days)
        since = history.set_state(key, state, {"name": name, "serial": facts.serial, "days_left": left,
                                               "not_after": rfc3339(facts.not_after)}, at)
        return CertificateState(role, name, facts, left, state, since, target, endpoint)

    def _crl(self, history: WatchHistory, info: Any, issuer: x509.Certificate | None, at: _dt.datetime) -> CrlState:
        served: CrlFetch | None = fetch_crl(info.url, timeout=self.crl_timeout) if info.url else None
        current: bool | None = None
        number: int | None = None
        this_update: _dt.datetime | None = None
        error: str | None = None
        if served is not None:
            if served.crl is None:
                error, current = served.error or "no CRL", False
            else:
                number, this_update = _crl_number(served.crl), served.crl.last_update_utc
                same_issuer = issuer is None or served.crl.issuer == issuer.subject
                current = same_issuer and number is not None and number >= info.number
                if not same_issuer:
                    error = f"the CRL served is {served.crl.issuer.rfc4514_string()}'s, not ours"
        state = crl_state(info.next_update, info.this_update, at, current, error)
        left = (info.next_update - at).total_seconds()
        since = history.set_state(f"crl:{info.issuer}", state, {"number": info.number, "url": info.url,
                                                                "served_number": number, "error": error}, at)
        return CrlState(info.issuer, info.number, info.this_update, info.next_update, left, info.url, current,
                        number, this_update, error, state, since)

    # the targets -----------------------------------------------------------------------------------------------

    def _identity(self, as_name: str | None) -> ClientIdentity | None:
        if as_name is None:
            return None
        from certkit.ca import CertificateAuthority

        with CertificateAuthority.open(self.home, clock=self.clock) as authority:
            return authority.identity_for(as_name, passphrase=self.key_passphrase,
                                          instead="add the target without --as")

    def _probe(self, targets: Sequence[WatchTarget], at: _dt.datetime
               ) -> list[tuple[WatchTarget, ProbeResult | CertkitError, float]]:
        """Probe every target, those with the same options together (one probe run, its concurrency)."""
        groups: dict[tuple[ProbeOptions, str | None], list[WatchTarget]] = {}
        for t in targets:
            groups.setdefault((probe_options(t), t.options.get("as_name")), []).append(t)
        out: list[tuple[WatchTarget, ProbeResult | CertkitError, float]] = []
        for (options, as_name), members in groups.items():
            started = time.monotonic()
            try:
                identity = self._identity(as_name)
            except CertkitError as exc:
                out += [(t, exc, 0.0) for t in members]
                continue
            results = probe_sync([t.target for t in members], anchors=self.anchors, identity=identity,
                                 options=options, clock=self.clock)
            wall = time.monotonic() - started
            for t, r in zip(members, results, strict=True):
                seconds = max((a.session.seconds for a in r.addresses if a.session is not None), default=wall)
                out.append((t, r, seconds))
        return out

    def _judge(self, history: WatchHistory, target: WatchTarget, result: ProbeResult | CertkitError, seconds: float,
               at: _dt.datetime) -> tuple[TargetState, list[CertificateState], list[Change]]:
        if isinstance(result, CertkitError):  # our side could not even start (our certificate for --as)
            code, verdict, result = 2, f"not probed: {result}", ProbeResult(target.target)
        else:
            code = exit_code([result])
            verdict = _verdict(result, code)
        state = "ok" if code == 0 else "unreachable" if code == 3 else "failing"
        since = history.set_state(f"target:{target.target}", state, {"verdict": verdict, "exit_code": code}, at)
        seen: list[CertificateState] = []
        changes: list[Change] = []
        for a in result.addresses:
            leaf = _leaf(a)
            if leaf is None:
                continue
            endpoint = _endpoint(a)
            facts = CertFacts.of(leaf)
            before = history.last_certificate(target.target, endpoint)
            change = None if before is None else compare(before, facts, target=target.target, endpoint=endpoint,
                                                         role=target.role, at=at)
            history.record_certificate(target.target, endpoint, facts, at, change)
            if change is not None:
                changes.append(change)
            seen.append(self._certificate(history, target.role, target.target, facts, at,
                                          key=f"certificate:{target.target}:{endpoint}", target=target.target,
                                          endpoint=endpoint))
        return (TargetState(target.target, target.role, code == 0, code, seconds, verdict, state, since),
                seen, changes)

    # serving ---------------------------------------------------------------------------------------------------

    def run_forever(self, every: float, stop: threading.Event,
                    on_cycle: Callable[[CycleReport | None, BaseException | None], None] | None = None) -> None:
        """A cycle every ``every`` seconds until ``stop`` is set; ``on_cycle`` hears each report or failure (a
        failed cycle keeps the last report and tries again at the next tick)."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                report: CycleReport | None = self.cycle()
                failure: BaseException | None = None
            except CertkitError as exc:
                report, failure = None, exc
            if on_cycle is not None:
                on_cycle(report, failure)
            stop.wait(max(0.0, every - (time.monotonic() - started)))


def _cn(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else cert.subject.rfc4514_string()


def _crl_number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        return None


# --- the Nagios check ------------------------------------------------------------------------------------------


def check(target: WatchTarget, *, anchors: Any = (), identity: ClientIdentity | None = None,
          clock: Clock | None = None, warning_days: float = 30.0, critical_days: float = 7.0,
          history: WatchHistory | None = None) -> NagiosResult:
    """Probe ``target`` once and answer as a Nagios plugin (see :func:`~certkit.core.watch.nagios_verdict`).

    With ``history``, a certificate that differs from the one the last watch cycle saw at the same endpoint is a
    WARNING naming the settings it affects (the check itself records nothing).
    """
    clock = clock or SystemClock()
    started = time.monotonic()
    [result] = probe_sync([target.target], anchors=anchors, identity=identity, options=probe_options(target),
                          clock=clock)
    duration = time.monotonic() - started
    at = clock.now()
    code = exit_code([result])
    leaves = [(a, leaf) for a in result.addresses if (leaf := _leaf(a)) is not None]
    soonest = min((leaf.not_valid_after_utc for _, leaf in leaves), default=None)
    changes: list[Change] = []
    if history is not None:
        for a, leaf in leaves:
            before = history.last_certificate(target.target, _endpoint(a))
            change = None if before is None else compare(before, CertFacts.of(leaf), target=target.target,
                                                         endpoint=_endpoint(a), role=target.role, at=at)
            if change is not None:
                changes.append(change)
    details = [f"{_endpoint(a)}: {a.verdict}" for a in result.addresses]
    details += [f"{f.code}: {f.detail}" for a in result.addresses for f in a.findings if str(f.severity) == "error"]
    return nagios_verdict(target.target, exit_code=code, verdict=_verdict(result, code),
                          days=None if soonest is None else days_left(soonest, at), not_after=soonest,
                          warning_days=warning_days, critical_days=critical_days, duration=duration,
                          details=details, changes=changes)


# --- the daily summary -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchSummary:
    """States now (each with the time it began), the state changes and certificate changes of the last ``hours``."""

    at: _dt.datetime
    hours: int
    states: tuple[StateRow, ...]
    transitions: tuple[dict[str, Any], ...]
    changes: tuple[Change, ...]

    @property
    def problems(self) -> tuple[StateRow, ...]:
        return tuple(s for s in self.states if s.state not in ("ok", "fresh"))

    def to_dict(self) -> dict[str, Any]:
        return {"at": rfc3339(self.at), "hours": self.hours, "states": [s.to_dict() for s in self.states],
                "transitions": list(self.transitions), "changes": [c.to_dict() for c in self.changes],
                "ok": not self.problems and not self.changes}


def summary(history: WatchHistory, *, clock: Clock, hours: int = 24) -> WatchSummary:
    """What the daily summary shows, from the history."""
    at = clock.now()
    since = at - _dt.timedelta(hours=hours)
    return WatchSummary(at, hours, tuple(history.states()), tuple(history.transitions(since)),
                        tuple(history.changes(since)))


def render_summary(s: WatchSummary, *, html: bool = False) -> str:
    """The summary as text (for a terminal or a mail) or as an HTML page (templates/watch-report.*.j2)."""
    from certkit.adapters.render import render

    return render("watch-report.html.j2" if html else "watch-report.txt.j2", summary=s.to_dict(),
                  problems=[p.to_dict() for p in s.problems])
