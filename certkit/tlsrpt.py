"""RFC 8460 (SMTP TLS Reporting) aggregate reports of what a pre-flight observed.

One report per pre-flight, for teams that already collect TLS-RPT: one policy entry for the partner
domain with ``policy-type`` ``no-policy-found`` (certkit applies neither DANE nor MTA-STS; Domain
Security is a bilateral agreement that RFC 8460 has no policy type for), a session per probed address
in the summary, and a ``failure-details`` entry per failed address with the catalogue's
``tlsrpt_result_type`` of its first error. RFC 8460 has no result type for "the receiver rejected our
client certificate": that is reported as ``validation-failure`` with the reply text as the
``failure-reason-code``.
"""

from __future__ import annotations

import datetime as _dt
import socket
import uuid
from typing import Any

from certkit.checks.preflight import PreflightReport
from certkit.core.findings import Finding, Severity
from certkit.core.jsonfacts import rfc3339

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
    result_type = f.entry.tlsrpt_result_type or "validation-failure"
    reply = f.evidence.get("reply") if f.code.startswith("peer.rejected") else None
    return result_type, str(reply) if reply else f.code


def tlsrpt_report(report: PreflightReport, *, organization: str | None = None, contact: str | None = None,
                  report_id: str | None = None, sending_mta_ip: str | None = None) -> dict[str, Any]:
    """The RFC 8460 aggregate report (a JSON-ready dict) of the sessions ``report`` observed.

    ``organization`` defaults to our domain, ``contact`` to ``postmaster@<our domain>``; ``report_id``
    to a fresh UUID; ``sending_mta_ip`` to the local address used to reach each receiving IP.
    """
    at = report.at.astimezone(_dt.UTC).replace(microsecond=0)
    failures: dict[tuple[str, str, str, str, str | None], int] = {}
    ok = 0
    for e in report.endpoints:
        errors = [f for f in e.findings if f.severity is Severity.ERROR]
        if not errors:
            ok += 1
            continue
        # A sending MTA fails on their certificate before it ever hears them refuse ours.
        ranked = sorted(errors, key=lambda f: (f.code.startswith("peer."), f.entry.tlsrpt_result_type is None))
        chosen = ranked[0]
        result_type, reason = _failure(chosen)
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
    mx_hosts = [h.name for h in report.route.hosts] if report.route else []
    policy: dict[str, Any] = {"policy-type": "no-policy-found", "policy-domain": report.partner}
    if mx_hosts:
        policy["mx-host"] = mx_hosts
    return {
        "organization-name": organization or report.our_domain,
        "date-range": {"start-datetime": rfc3339(at), "end-datetime": rfc3339(at)},
        "contact-info": contact or f"postmaster@{report.our_domain}",
        "report-id": report_id or str(uuid.uuid4()),
        "policies": [{
            "policy": policy,
            "summary": {"total-successful-session-count": ok, "total-failure-session-count": sum(failures.values())},
            "failure-details": details,
        }],
    }
