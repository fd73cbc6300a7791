"""``preflight --mx HOST[:PORT]``: a staging or lab MX probed directly, without MX resolution (issue #12)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from certkit.checks.preflight import PreflightOptions, render_html, render_text
from certkit.errors import InputError
from tests.test_preflight import SCHEMA, cli, files
from tests.test_preflight_world import World

#: A DNS server that never answers: any lookup the pre-flight made would fail.
NO_DNS = "127.0.0.1:1"


def without_dns(w: World, tmp_path: Path) -> list[str]:
    args = files(w, tmp_path)
    args[args.index("--nameserver") + 1] = NO_DNS
    return [*args, "--mta-sts", "off"]


def test_mx_given_skips_mx_resolution(w: World, tmp_path: Path) -> None:
    assert w.server is not None
    given = f"127.0.0.1:{w.server.port}"
    result = CliRunner().invoke(cli(), [*without_dns(w, tmp_path), "--mx", given, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(data, SCHEMA)
    assert data["ready"] is True
    assert data["routing"]["mx_given"] == [given]
    assert data["routing"]["mx"] == [{"name": "127.0.0.1", "preference": None, "addresses": ["127.0.0.1"]}]
    [endpoint] = data["endpoints"]
    assert endpoint["reached"] is True and endpoint["port"] == w.server.port
    assert not any(f["code"].startswith("dns.") for s in data["steps"] for f in s["findings"])
    result = CliRunner().invoke(cli(), [*without_dns(w, tmp_path), "--mx", given])
    assert result.exit_code == 0, result.output
    assert f"MX resolution skipped: probing the hosts given with --mx ({given})" in result.stdout


def test_mx_twice_probes_both(w: World, tmp_path: Path) -> None:
    assert w.server is not None
    port = w.server.port
    report = w.preflight(mx=(f"127.0.0.1:{port}", f"localhost:{port}"), nameserver=NO_DNS)
    assert report.ready, [(i.step, i.finding.code, i.finding.detail) for i in report.items]
    assert [(e.host, e.address, e.port) for e in report.endpoints] == [
        ("127.0.0.1", "127.0.0.1", port), ("localhost", "127.0.0.1", port)]
    assert report.mx_given == (f"127.0.0.1:{port}", f"localhost:{port}")
    assert [h.name for h in report.route.hosts] == ["127.0.0.1", "localhost"]  # type: ignore[union-attr]
    assert "MX resolution skipped" in render_text(report)
    assert "MX resolution skipped" in render_html(report, version="test")


def test_mx_port_defaults_to_port_and_names_are_hosts() -> None:
    options = PreflightOptions(port=2525, mx=("mx1.fabrikam.test", "192.0.2.1", "[2001:db8::1]:26", "::1"))
    assert options.mx == ("mx1.fabrikam.test:2525", "192.0.2.1:2525", "[2001:db8::1]:26", "[::1]:2525")


def test_an_mx_without_an_address_is_a_routing_failure(w: World) -> None:
    report = w.preflight(mx=("nothere.fabrikam.test:25",))  # the world's DNS has no such name
    assert report.exit_code == 3 and not report.endpoints
    assert [(i.step, i.finding.code) for i in report.items if i.step == "routing"] == [("routing", "dns.failure")]


@pytest.mark.parametrize("value", ["", "mx:0", "a b", "1.2.3", "[::1", "mx1.fabrikam.test:99999", "[mx]:25"])
def test_bad_mx_is_a_usage_error_in_one_line(w: World, tmp_path: Path, value: str) -> None:
    with pytest.raises(InputError, match="Bad --mx"):
        PreflightOptions(mx=(value,))
    result = CliRunner().invoke(cli(), [*without_dns(w, tmp_path), "--mx", value])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("certkit: error:") and "--mx" in lines[0], lines
    assert result.stdout == ""
