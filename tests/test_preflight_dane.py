"""The pre-flight with DANE (``--dane auto|require|off``): the probe's DANE line and dane.* findings per MX.

The world of tests/test_preflight_world.py (Contoso and Fabrikam on loopback), with its DNS replaced by
the validating-resolver stand-in of tests/test_probe_dane.py (AD bit on the names told to be secure), so
that Fabrikam's MX host can publish TLSA records at ``_PORT._tcp.mx1.fabrikam.test``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from certkit.checks.preflight import OUTBOUND, PreflightReport, render_html, render_text
from certkit.core.dane import tlsa_for
from certkit.errors import InputError
from certkit.tlsrpt import tlsrpt_report
from tests.test_preflight import cli, files
from tests.test_preflight_world import ZONES, World
from tests.test_probe_dane import AdDnsServer

SCHEMA = json.loads((Path(__file__).parent.parent / "certkit/schemas/preflight.schema.json").read_text())
WRONG = "3 1 1 " + "ab" * 32
MATCHED = "1 secure TLSA record, 3 1 1 matched (Domain Security still needs the trust store)"


def owner(w: World) -> str:
    assert w.server is not None
    return f"_{w.server.port}._tcp.mx1.fabrikam.test"


def signed(w: World, tlsa: Sequence[str] = (), *, secure: bool = True) -> AdDnsServer:
    """Fabrikam's zone (MX, A, and TLSA records if any), all of it DNSSEC-secure unless told otherwise."""
    zones: dict[str, Mapping[str, Sequence[str]]] = dict(ZONES)
    if tlsa:
        zones[owner(w)] = {"TLSA": list(tlsa)}
    ns = AdDnsServer(zones, secure=["fabrikam.test", "mx1.fabrikam.test", owner(w)] if secure else ())
    w.dns = ns  # w.kwargs() and files() take the nameserver from here
    return ns


def run(w: World, **overrides: Any) -> PreflightReport:
    return w.preflight(**overrides)


def verdict(report: PreflightReport) -> tuple[bool, int, list[str]]:
    """What decides: ready, the exit code, the blocking codes other than dane.*."""
    return report.ready, report.exit_code, sorted(i.finding.code for i in report.blocking
                                                  if not i.finding.code.startswith("dane."))


def dane_items(report: PreflightReport) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(i.finding.code, i.step, i.directions) for i in report.items if i.finding.code.startswith("dane.")]


def validate(report: PreflightReport) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(report.to_dict(), default=str))
    jsonschema.validate(data, SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    return data


def test_library_default_is_off_and_looks_up_nothing(w: World) -> None:
    ns = signed(w, [tlsa_for(w.their_leaf.cert, 3).text()])
    report = run(w)
    assert report.dane == "off" and report.ready
    assert [e.dane for e in report.endpoints] == [None]
    assert "TLSA" not in [t for _, t in ns.queries]
    assert "DANE:" not in render_text(report) and "DANE:" not in render_html(report)
    data = validate(report)
    assert data["dane"] == "off" and data["endpoints"][0]["dane"] is None
    with pytest.raises(InputError, match="DANE mode"):
        run(w, dane="on")


def test_secure_dane_ee_match_shows_the_line_and_keeps_the_verdict(w: World) -> None:
    signed(w, [tlsa_for(w.their_leaf.cert, 3).text()])
    off, auto = run(w, dane="off"), run(w, dane="auto")
    assert auto.ready and verdict(auto) == verdict(off) == (True, 0, [])
    assert dane_items(auto) == []
    [e] = auto.endpoints
    assert e.dane is not None and e.dane.applies and e.dane.summary == MATCHED
    text = render_text(auto)
    assert "Verdict:   READY" in text and f"    DANE: {MATCHED}" in text.splitlines()
    assert f"DANE: {MATCHED}" in render_html(auto)
    data = validate(auto)
    assert data["dane"] == "auto" and data["endpoints"][0]["dane"]["summary"] == MATCHED
    assert data["endpoints"][0]["dane"]["matched"] == tlsa_for(w.their_leaf.cert, 3).text()


def test_under_exchange_rules_a_dane_match_does_not_replace_the_trust_store(w: World) -> None:
    """Their root not in our store: NOT READY with DANE as without (Exchange Server does no DANE)."""
    signed(w, [tlsa_for(w.their_leaf.cert, 3).text()])
    anchors = [w.our_root.cert]
    off, auto = run(w, anchors=anchors, dane="off"), run(w, anchors=anchors, dane="auto")
    assert verdict(auto) == verdict(off) and not auto.ready and auto.exit_code == 1
    assert "chain.unknown-issuer" in verdict(auto)[2]
    assert auto.endpoints[0].dane is not None and auto.endpoints[0].dane.matched is not None
    # Under the postfix validator the match authenticates: the PKIX finding is information only.
    postfix = run(w, anchors=anchors, dane="auto", validator="postfix")
    assert postfix.ready, [i.finding for i in postfix.blocking]


def test_secure_mismatch_adds_dane_no_match_to_the_endpoints_step_outbound(w: World) -> None:
    signed(w, [WRONG])
    off, auto = run(w, dane="off"), run(w, dane="auto")
    assert off.ready
    assert dane_items(auto) == [("dane.no-match", "endpoints", (OUTBOUND,))]
    assert not auto.ready and auto.exit_code == 1 and auto.step_status("endpoints") == "fail"
    assert [i.finding.code for i in auto.direction("outbound")] == ["dane.no-match"]
    assert auto.direction("inbound") == []
    [item] = auto.blocking
    assert item.where is not None and item.where.startswith("mx1.fabrikam.test [127.0.0.1]:")
    text = render_text(auto)
    assert "NOT READY" in text and "dane.no-match" in text
    assert "    DANE: 1 secure TLSA record, none matched" in text.splitlines()
    assert "dane.no-match" in render_html(auto)
    data = validate(auto)
    [step] = [s for s in data["steps"] if s["name"] == "endpoints"]
    assert [f["code"] for f in step["findings"]] == ["dane.no-match"]
    tlsrpt = tlsrpt_report(auto, report_id="r1")
    assert tlsrpt["policies"][0]["summary"]["total-failure-session-count"] == 1


def test_require_without_tlsa_adds_dane_not_published(w: World) -> None:
    signed(w)  # secure MX, no TLSA records (securely denied)
    auto, require = run(w, dane="auto"), run(w, dane="require")
    assert auto.ready and dane_items(auto) == []
    assert auto.endpoints[0].dane is not None and auto.endpoints[0].dane.lookup == "none"
    assert dane_items(require) == [("dane.not-published", "endpoints", (OUTBOUND,))]
    assert not require.ready and require.exit_code == 1
    assert "dane.not-published" in render_text(require)
    assert validate(require)["dane"] == "require"


def test_cli_defaults_to_auto_and_takes_require_and_off(w: World, tmp_path: Path) -> None:
    signed(w)
    args = files(w, tmp_path)
    result = CliRunner().invoke(cli(), [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    jsonschema.validate(data, SCHEMA)
    assert data["dane"] == "auto" and data["endpoints"][0]["dane"]["lookup"] == "none"
    result = CliRunner().invoke(cli(), [*args, "--dane", "require"])
    assert result.exit_code == 1, result.output
    assert "dane.not-published" in result.stdout and "    DANE: no TLSA records (securely denied)" in result.stdout
    result = CliRunner().invoke(cli(), [*args, "--dane", "off"])
    assert result.exit_code == 0 and "DANE:" not in result.stdout
    result = CliRunner().invoke(cli(), [*args, "--dane", "sometimes"])
    assert result.exit_code == 2


def test_insecure_tlsa_records_are_not_used(w: World) -> None:
    signed(w, [WRONG], secure=False)
    report = run(w, dane="auto")
    assert report.ready and dane_items(report) == []
    assert report.endpoints[0].dane is not None and "not used" in report.endpoints[0].dane.summary
