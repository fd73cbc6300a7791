"""RFC 8460 (SMTP TLS Reporting) aggregate reports of what a pre-flight observed.

One report per pre-flight, for teams that already collect TLS-RPT: a session per probed address, each
under the policy a sending MTA would have applied to it (RFC 8460 4.3): ``tlsa`` for an MX host where DANE
applied (``policy-string``: its TLSA records, ``mx-host``: the host), else ``sts`` when the partner domain
has an MTA-STS policy in ``testing`` or ``enforce`` (``policy-string``: the policy's lines, ``mx-host``: its
patterns; an MX that is not listed or fails the Web PKI check is a failed session) or announces one that
could not be fetched or read (``sts`` without a ``policy-string``, every session failed with
``sts-policy-fetch-error``, ``sts-policy-invalid`` or ``sts-webpki-invalid``), else ``no-policy-found``
(Domain Security is a bilateral agreement that RFC 8460 has no policy type for). Each policy has the
summary of its sessions and a ``failure-details`` entry per failed address with the catalogue's
``tlsrpt_result_type`` of its first error. RFC 8460 has no result type for "the receiver rejected our
client certificate": that is reported as ``validation-failure`` with the reply text as the
``failure-reason-code``.
"""

from __future__ import annotations

import datetime as _dt
import socket
import uuid
from typing import TYPE_CHECKING, Any

from certkit.checks.preflight import PreflightReport
from certkit.checks.probe import AddressResult
from certkit.core.findings import Finding, Severity
from certkit.core.jsonfacts import rfc3339

if TYPE_CHECKING:
    from certkit.core.mtasts import StsReport

__all__ = ["tlsrpt_report"]


def _local_address_for(ip: str) -> str | None:
    """The local address the system would send from to reach ``ip`` (no packet is sent)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((ip, 25))
            return str(s.getsockname()[0])
    except OSError:
        return None


def _failure(f: Finding) -> tuple[str, str | None]:
    """The result type and reason code of the first error with a TLS-RPT type."""
    result_type = str(f.evidence.get("tlsrpt_result_type") or f.entry.tlsrpt_result_type or "validation-failure")
    reply = f.evidence.get("reply") if f.code.startswith("peer.rejected") else None
    return result_type, str(reply) if reply else f.code


def tlsrpt_report(report: PreflightReport, *, organization: str | None = None, contact: str | None = None,
                  report_id: str | None = None, sending_mta_ip: str | None = None,
                  sts: StsReport | None = None) -> dict[str, Any]:
    """The RFC 8460 aggregate report (a JSON-ready dict) of the sessions ``report`` observed.

    ``organization`` defaults to our domain, ``contact`` to ``postmaster@<our domain>``; ``report_id``
    to a fresh UUID; ``sending_mta_ip`` to the local address used to reach each receiving IP. ``sts``: the
    partner's MTA-STS report, for the ``sts`` policy type (default: the report's own, ``report.mta_sts``,
    made with ``PreflightOptions(mta_sts="auto")``).
    """
    sts = sts if sts is not None else report.mta_sts
    at = report.at.astimezone(_dt.UTC).replace(microsecond=0)
    groups: dict[str, tuple[dict[str, Any], list[tuple[AddressResult, list[Finding]]]]] = {}
    for e in report.endpoints:
        policy, extra = _policy_of(report, e, sts)
        key = repr(sorted(policy.items()))
        groups.setdefault(key, (policy, []))[1].append((e, extra))
    if not groups:
        groups["none"] = (_no_policy(report), [])
    return {
        "organization-name": organization or report.our_domain,
        "date-range": {"start-datetime": rfc3339(at), "end-datetime": rfc3339(at)},
        "contact-info": contact or f"postmaster@{report.our_domain}",
        "report-id": report_id or str(uuid.uuid4()),
        "policies": [_policy_entry(policy, sessions, sending_mta_ip) for policy, sessions in groups.values()],
    }


def _no_policy(report: PreflightReport) -> dict[str, Any]:
    mx_hosts = [h.name for h in report.route.hosts] if report.route else []
    policy: dict[str, Any] = {"policy-type": "no-policy-found", "policy-domain": report.partner}
    if mx_hosts:
        policy["mx-host"] = mx_hosts
    return policy


def _policy_of(report: PreflightReport, e: AddressResult, sts: StsReport | None
               ) -> tuple[dict[str, Any], list[Finding]]:
    """The policy a sender applied to endpoint ``e`` (DANE first, RFC 8461 2), and MTA-STS failures to add."""
    if e.dane is not None and e.dane.applies:
        return {"policy-type": "tlsa", "policy-string": [r.text() for r in e.dane.records],
                "policy-domain": report.partner, "mx-host": e.host}, []
    if sts is None or sts.record is None:
        return _no_policy(report), []
    policy: dict[str, Any] = {"policy-type": "sts", "policy-domain": report.partner}
    if sts.policy is None:
        failed = [f for f in sts.findings if f.entry.tlsrpt_result_type in ("sts-policy-fetch-error",
                                                                            "sts-policy-invalid",
                                                                            "sts-webpki-invalid")]
        return policy, failed
    if sts.policy.mode == "none":
        return _no_policy(report), []
    policy.update({"policy-string": sts.policy.lines, "mx-host": list(sts.policy.mx)})
    mine = [f for f in sts.findings if f.subject == e.host and f.code in ("sts.mx-not-listed", "sts.mx-webpki-invalid",
                                                                         "sts.starttls-missing")]
    return policy, mine


def _policy_entry(policy: dict[str, Any], sessions: list[tuple[AddressResult, list[Finding]]],
                  sending_mta_ip: str | None) -> dict[str, Any]:
    failures: dict[tuple[str, str, str, str, str | None], int] = {}
    ok = 0
    for e, extra in sessions:
        errors = [f for f in e.findings if f.severity is Severity.ERROR] + extra
        if not errors:
            ok += 1
            continue
        # A sending MTA fails on their certificate before it ever hears them refuse ours.
        ranked = sorted(errors, key=lambda f: (f.code.startswith("peer."), f.entry.tlsrpt_result_type is None))
        result_type, reason = _failure(ranked[0])
        sender = sending_mta_ip or _local_address_for(e.address) or "0.0.0.0"
        key = (result_type, sender, e.host, e.address, reason)
        failures[key] = failures.get(key, 0) + 1
    details = []
    for (result_type, sender, host, address, reason), count in failures.items():
        d: dict[str, Any] = {"result-type": result_type, "sending-mta-ip": sender,
                             "receiving-mx-hostname": host, "receiving-ip": address, "failed-session-count": count}
        if reason:
            d["failure-reason-code"] = reason
        details.append(d)
    return {"policy": policy,
            "summary": {"total-successful-session-count": ok, "total-failure-session-count": sum(failures.values())},
            "failure-details": details}
