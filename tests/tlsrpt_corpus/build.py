"""Build the wrapped reports of the corpus (gzip, e-mails, the large report) from ``sources/``, byte for byte.

Run from the repository root: ``python tests/tlsrpt_corpus/build.py``. The output is deterministic (gzip
mtime 0, fixed MIME boundaries and dates), and tests/test_tlsrpt_read.py checks that ``reports/`` holds
exactly what this script writes, so the committed files and their recipe cannot drift apart.
"""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "sources"
REPORTS = HERE / "reports"


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def _wrap(text: bytes) -> str:
    b64 = base64.b64encode(text).decode("ascii")
    return "\r\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))


def report_mail(*, sender: str, submitter: str, domain: str, report_id: str, date: str, boundary: str,
                filename: str, media_type: str, payload: bytes, human: str, base64_body: bool = True) -> bytes:
    """An RFC 8460 §5.3 report e-mail: multipart/report; report-type="tlsrpt", a text part and the report."""
    if base64_body:
        body, cte = _wrap(payload), "base64"
    else:
        body, cte = payload.decode("utf-8").replace("\n", "\r\n").rstrip("\r\n"), "7bit"
    lines = [
        f"From: {sender}",
        "To: tlsrpt@contoso.com",
        f"Subject: Report Domain: {domain} Submitter: {submitter} Report-ID: <{report_id}>",
        f"Date: {date}",
        f"Message-ID: <{report_id.replace('+', '.')}@{submitter}>",
        f"TLS-Report-Domain: {domain}",
        f"TLS-Report-Submitter: {submitter}",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type="tlsrpt"; boundary="{boundary}"',
        "",
        "This is a multi-part message in MIME format.",
        "",
        f"--{boundary}",
        'Content-Type: text/plain; charset="us-ascii"',
        "Content-Transfer-Encoding: 7bit",
        "",
        human,
        "",
        f"--{boundary}",
        f'Content-Type: {media_type}; name="{filename}"',
        f'Content-Disposition: attachment; filename="{filename}"',
        f"Content-Transfer-Encoding: {cte}",
        "",
        body,
        "",
        f"--{boundary}--",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")


def large_report(count: int = 5000) -> bytes:
    """One day of a bulk sender: ``count`` failure records, one per sending address, over two MX hosts."""
    details = []
    for i in range(count):
        if i % 3 == 0:
            d = {"result-type": "certificate-expired", "receiving-mx-hostname": "mx1.contoso.com",
                 "receiving-ip": "192.0.2.25"}
        else:
            d = {"result-type": "validation-failure", "receiving-mx-hostname": "mx2.contoso.com",
                 "receiving-ip": "192.0.2.26", "failure-reason-code": "X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY"}
        d["sending-mta-ip"] = f"2001:db8:{i // 256:x}::{i % 256:x}"
        d["failed-session-count"] = 1 + i % 4
        details.append(d)
    doc = {
        "organization-name": "Litware Bulk Mail",
        "date-range": {"start-datetime": "2024-09-11T00:00:00Z", "end-datetime": "2024-09-11T23:59:59Z"},
        "contact-info": "tlsrpt@litware.example",
        "report-id": "litware-20240911-contoso.com",
        "policies": [{
            "policy": {"policy-type": "sts", "policy-domain": "contoso.com",
                       "policy-string": ["version: STSv1", "mode: enforce", "mx: *.contoso.com", "max_age: 604800"],
                       "mx-host": ["*.contoso.com"]},
            "summary": {"total-successful-session-count": 250000,
                        "total-failure-session-count": sum(d["failed-session-count"] for d in details)},
            "failure-details": details,
        }],
    }
    return json.dumps(doc, indent=1).encode("utf-8")


def build() -> dict[str, bytes]:
    """Every derived file of ``reports/`` by name."""
    google = (SOURCES / "google-sts.json").read_bytes()
    microsoft = (SOURCES / "microsoft-tlsa-and-sts.json").read_bytes()
    google_plain = (SOURCES / "google-json-attachment.json").read_bytes()
    ms_name = "microsoft.com!contoso.com!1726012800!1726099199!133705440000000002.json.gz"
    return {
        "google.com!contoso.com!1725926400!1726012799!001.json.gz": gz(google),
        "microsoft-report.eml": report_mail(
            sender="tlsrpt-noreply@microsoft.com", submitter="microsoft.com", domain="contoso.com",
            report_id="133705440000000002+contoso.com", date="Thu, 12 Sep 2024 06:11:09 +0000",
            boundary="_tlsrpt_boundary_0001_", filename=ms_name, media_type="application/tlsrpt+gzip",
            payload=gz(microsoft),
            human="This is an aggregate TLS report from microsoft.com\r\n\r\nMicrosoft Corporation"),
        "google-report-json-attachment.eml": report_mail(
            sender="noreply-smtp-tls-reporting@google.com", submitter="google.com", domain="contoso.com",
            report_id="2024-09-11T00:00:00Z_contoso.com", date="Thu, 12 Sep 2024 09:59:59 -0700",
            boundary="000000000000a1b2c3d4e5f6", filename="google.com!contoso.com!1726012800!1726099199!001.json",
            media_type="application/tlsrpt+json", payload=google_plain, base64_body=False,
            human="This is an aggregate TLS report from google.com"),
        "litware-large.json.gz": gz(large_report()),
    }


def main() -> None:
    for name, data in build().items():
        (REPORTS / name).write_bytes(data)
        print(f"wrote {REPORTS / name} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
