"""Bulk probing (issue 15, docs/bulk.md) against a farm of real STARTTLS servers on many loopback addresses.

The farm (tests/bulk_farm.py) counts connections per address and per /24 at the servers; the DNS server
(tests/dnsserver.py) gives each domain an MX host and each host an address. What is asserted is what the
servers saw: never more sessions at once than the limits, one session per MX host and address however many
domains share it, every target once in the JSON Lines file, after a kill and a resume too.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from certkit.adapters.truststore import TrustStore
from certkit.checks.bulk import line_of, probe_stream, read_done
from certkit.checks.limits import ServerLimits, SessionShare, network_of
from certkit.checks.probe import ProbeOptions, ProbeResult, probe_sync
from certkit.cli import main
from certkit.errors import InputError
from certkit.schemas import document, load, schema_files
from tests.bulk_farm import Farm, addresses, free_port, zones
from tests.dnsserver import DnsServer
from tests.pki import make_intermediate, make_leaf, make_root
from tests.test_cli_term import certkit_on_a_terminal

ROOT_DIR = Path(__file__).parent.parent
ROOT = make_root("Bulk Root")
INTER = make_intermediate(ROOT, "Bulk CA")
#: One certificate for every MX host of the farm; of the domains it names only d0.test.
LEAF = make_leaf(INTER, ["mx.farm.test", "*.farm.test", "d0.test"])


@pytest.fixture(scope="module")
def pem_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("bulk-pki")
    (folder / "server.pem").write_bytes(LEAF.pem + INTER.pem)
    (folder / "server.key").write_bytes(LEAF.key_pem)
    return folder / "server.pem", folder / "server.key"


class Lab:
    """A farm on ``addresses``, a DNS server for ``domains`` (domain -> MX host) and ``hosts`` (host -> address)."""

    def __init__(self, pem: tuple[Path, Path], addrs: list[str], domains: dict[str, str], hosts: dict[str, str],
                 delay: float) -> None:
        self.port = free_port(addrs)
        self.farm = Farm(addrs, self.port, *pem, delay=delay).start()
        self.dns = DnsServer(zones(domains, hosts))
        self.domains = list(domains)

    def options(self, **kw: Any) -> ProbeOptions:
        return ProbeOptions(port=self.port, nameserver=self.dns.address, validator="postfix", timeout=5, **kw)

    def args(self, store: Path) -> list[str]:
        return ["--port", str(self.port), "--nameserver", self.dns.address, "--store", str(store), "--managed-only",
                "--validator", "postfix", "--timeout", "5", "--mta-sts", "off", "--dane", "off"]

    def close(self) -> None:
        self.farm.stop()
        self.dns.close()


@pytest.fixture
def lab_of(pem_files: tuple[Path, Path]) -> Iterator[Any]:
    made: list[Lab] = []

    def make(addrs: list[str], domains: dict[str, str], hosts: dict[str, str], delay: float = 0.0) -> Lab:
        made.append(Lab(pem_files, addrs, domains, hosts, delay))
        return made[-1]

    yield make
    for lab in made:
        lab.close()


def spread(count: int, addrs: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """``count`` domains, each with its own MX host, the hosts dealt over ``addrs`` in turn."""
    hosts = {f"mx{i}.farm.test": addrs[i % len(addrs)] for i in range(count)}
    return {f"d{i}.test": f"mx{i}.farm.test" for i in range(count)}, hosts


def stream(targets: list[str], options: ProbeOptions, window: int = 1000) -> list[ProbeResult]:
    async def run() -> list[ProbeResult]:
        return [r async for r in probe_stream(targets, anchors=[ROOT.cert], options=options, window=window)]

    return asyncio.run(run())


@pytest.fixture
def store(tmp_path: Path) -> Path:
    TrustStore(tmp_path / "trust").add(ROOT.cert, label="bulk")
    return tmp_path / "trust"


def line_validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    registry = referencing.Registry().with_resources(
        [(load(n)["$id"], referencing.Resource.from_contents(load(n))) for n in schema_files()])
    schema = load(document("probe --jsonl").schema)
    return jsonschema.validators.validator_for(schema)(schema, registry=registry)


# --- the limits, at the servers --------------------------------------------------------------------------


def test_never_more_sessions_per_address_and_per_net_than_the_limits(lab_of: Any) -> None:
    addrs = addresses(8, per_net=4)  # two /24s of four addresses
    domains, hosts = spread(48, addrs)
    lab = lab_of(addrs, domains, hosts, delay=0.15)
    results = stream(lab.domains, lab.options(per_address=2, per_net=3, concurrency=50, share_sessions=True))
    assert sorted(r.target for r in results) == sorted(lab.domains)
    assert all(r.addresses and r.addresses[0].reached for r in results)
    peaks = lab.farm.peaks()
    assert max(peaks.values()) <= 2 and sum(lab.farm.totals().values()) == 48
    nets = {n: g.peak for n, g in lab.farm.nets.items()}
    assert max(nets.values()) == 3  # the network limit held, and was used
    assert set(nets) == {"127.1.0.0/24", "127.1.1.0/24"}


def test_the_per_address_limit_is_reached_and_spread_over_free_servers(lab_of: Any) -> None:
    addrs = addresses(6)
    domains, hosts = spread(36, addrs)
    lab = lab_of(addrs, domains, hosts, delay=0.2)
    stream(lab.domains, lab.options(per_address=2, concurrency=12, share_sessions=True))
    assert set(lab.farm.peaks().values()) == {2}  # each server saw two at once, never three
    # Spread: while one server had its two, others were busy too (one server at a time would peak at 2).
    # Counted at the servers, not timed: timings never decide a test.
    assert lab.farm.all.peak >= 6


def test_without_limits_one_server_takes_them_all(lab_of: Any) -> None:
    addrs = addresses(1)
    domains, hosts = spread(10, addrs)
    lab = lab_of(addrs, domains, hosts, delay=0.2)
    probe_sync(lab.domains, anchors=[ROOT.cert], options=lab.options(concurrency=10))
    assert lab.farm.peaks()[addrs[0]] > 2  # the library's default: no per-address limit (the CLI's is 2)


# --- one session per MX host and address --------------------------------------------------------------


def test_domains_on_one_mx_share_one_session_each_judged_under_its_own_name(lab_of: Any) -> None:
    addrs = addresses(1)
    domains = {f"d{i}.test": "mx.farm.test" for i in range(30)}
    lab = lab_of(addrs, domains, {"mx.farm.test": addrs[0]}, delay=0.1)
    results = {r.target: r for r in stream(lab.domains, lab.options(per_address=2, share_sessions=True))}
    assert lab.farm.totals() == {addrs[0]: 1}  # thirty domains, one session
    assert lab.farm.gauges[addrs[0]].names == Counter({"mx.farm.test": 1})  # SNI is the MX host's
    shared = [r.addresses[0].session_of for r in results.values()]
    maker = next(t for t, r in results.items() if r.addresses[0].session_of is None)
    assert shared.count(None) == 1 and set(shared) == {None, maker}
    # The session is shared; the name rule is each domain's: only d0.test is in the certificate.
    assert results["d0.test"].addresses[0].ok
    for name in ("d1.test", "d29.test"):
        assert not results[name].addresses[0].ok
        assert "certificate" in results[name].addresses[0].verdict or "name" in results[name].addresses[0].verdict
    line = line_of(results["d1.test"], "postfix")
    assert line["result"]["addresses"][0]["session_of"] in (None, maker)


def test_different_mx_hosts_on_one_address_are_different_sessions(lab_of: Any) -> None:
    addrs = addresses(1)
    domains = {"d0.test": "mx1.farm.test", "d1.test": "mx2.farm.test", "d2.test": "mx1.farm.test"}
    lab = lab_of(addrs, domains, {"mx1.farm.test": addrs[0], "mx2.farm.test": addrs[0]})
    stream(lab.domains, lab.options(share_sessions=True))
    assert lab.farm.gauges[addrs[0]].names == Counter({"mx1.farm.test": 1, "mx2.farm.test": 1})


def test_keyed_semaphores_are_dropped_when_idle_and_shares_are_bounded() -> None:
    async def run() -> tuple[int, int, int]:
        limits = ServerLimits(2, 8)
        share: SessionShare[int] = SessionShare(keep=10)

        async def one(i: int) -> None:
            async with limits.hold(f"192.0.{i % 50}.{i % 7}"):
                await asyncio.sleep(0)

            async def make() -> int:
                return i

            await share.get(i % 40, make)

        await asyncio.gather(*(one(i) for i in range(500)))
        return limits.tracked, len(share._done), share.made

    tracked, kept, made = asyncio.run(run())
    assert tracked == 0 and kept == 10 and made >= 40
    assert network_of("192.0.2.77") == "192.0.2.0/24" and network_of("2001:db8:1:2::25") == "2001:db8:1::/48"


def test_limits_must_be_positive() -> None:
    with pytest.raises(Exception, match="per_address must be at least 1"):
        ProbeOptions(per_address=0)


# --- JSON Lines, the command --------------------------------------------------------------------------


def test_jsonl_streams_one_valid_document_per_target(lab_of: Any, store: Path, tmp_path: Path) -> None:
    addrs = addresses(4)
    domains, hosts = spread(12, addrs)
    lab = lab_of(addrs, domains, hosts)
    listing = tmp_path / "domains.txt"
    listing.write_text("# partners\n" + "".join(f"{d}\n" for d in lab.domains) + "d3.test\nnowhere.test\n")
    out = tmp_path / "out.jsonl"
    r = CliRunner().invoke(main, ["probe", "--from", str(listing), "--jsonl", str(out), *lab.args(store)])
    assert r.exit_code == 1, r.output  # d1.test... fail the name rule; nowhere.test does not exist
    assert re.match(r"13 targets in .*out\.jsonl: \d+ with errors, 1 not reached; exit 1\.", r.stdout)
    lines = out.read_text().splitlines()
    validator = line_validator()
    docs = [json.loads(x) for x in lines]
    for doc in docs:
        errors = list(validator.iter_errors(doc))
        assert not errors, errors[0].message
        assert next(iter(doc)) == "schema_version"
    assert sorted(d["target"] for d in docs) == sorted([*lab.domains, "nowhere.test"])  # d3.test once
    by = {d["target"]: d for d in docs}
    assert by["d0.test"]["exit_code"] == 0 and by["nowhere.test"]["exit_code"] == 3 and by["d1.test"]["exit_code"] == 1

    piped = CliRunner().invoke(main, ["probe", "d0.test", "d1.test", "--json-lines", *lab.args(store)])
    assert piped.exit_code == 1
    assert sorted(json.loads(x)["target"] for x in piped.stdout.splitlines()) == ["d0.test", "d1.test"]


@pytest.mark.parametrize(("args", "message"), [
    (["--resume"], "--resume and --executor go with --jsonl"),
    (["--jsonl", "x.jsonl", "--json-lines"], "mutually exclusive"),
    (["--json-lines", "--json"], "do not go with JSON lines"),
    (["--json-lines", "--resume"], "--resume needs --jsonl FILE"),
    (["--json-lines", "--executor", "ray://x"], "Unknown --executor"),
    (["--json-lines", "--executor", "dask-local:0"], "the number of workers must be 1 to 256"),
])
def test_bulk_options_are_checked(args: list[str], message: str, tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["probe", "d0.test", *args, "--home", str(tmp_path)])
    assert r.exit_code == 2 and message in r.output


def test_a_bad_line_stops_the_run_before_anything_is_probed(tmp_path: Path) -> None:
    listing = tmp_path / "t.txt"
    listing.write_text("d0.test\nd1.test:99999\n")
    out = tmp_path / "o.jsonl"
    r = CliRunner().invoke(main, ["probe", "--from", str(listing), "--jsonl", str(out), "--home", str(tmp_path)])
    assert r.exit_code == 2 and "Bad port in target 'd1.test:99999'" in r.output
    assert not out.exists() or out.read_text() == ""


# --- resume --------------------------------------------------------------------------------------------


def test_read_done_cuts_a_torn_last_line(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    good = json.dumps({"target": "a.test", "exit_code": 0}) + "\n"
    out.write_text(good + '{"target": "b.te')
    done, tally = read_done(out)
    assert done == {"a.test"} and tally.exit_code == 0 and out.read_text() == good
    out.write_text(good + "not json\n")
    with pytest.raises(InputError, match="not a probe result"):
        read_done(out)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_a_killed_run_resumes_and_every_target_is_there_once(lab_of: Any, store: Path, tmp_path: Path,
                                                            sig: signal.Signals) -> None:
    addrs = addresses(3)
    domains, hosts = spread(60, addrs)
    lab = lab_of(addrs, domains, hosts, delay=0.05)
    listing = tmp_path / "domains.txt"
    listing.write_text("".join(f"{d}\n" for d in lab.domains))
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "certkit", "probe", "--from", str(listing), "--jsonl", str(out), *lab.args(store),
           "--per-address", "1", "--concurrency", "3"]
    env = {**os.environ, "PYTHONPATH": str(ROOT_DIR)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 10):
        time.sleep(0.05)
    seen = out.read_text().count("\n") if out.exists() else 0
    proc.send_signal(sig)
    proc.wait(30)
    first = out.read_text().count("\n")
    if sig == signal.SIGINT:  # Ctrl-C stops the run wherever it lands (even inside OpenSSL's verify callback)
        assert proc.returncode == 130, proc.stderr.read() if proc.stderr else b""
    assert 10 <= first < 60, ("the run was not interrupted half-way", seen, proc.returncode, proc.stderr.read()
                              if proc.stderr else b"")
    with out.open("a") as f:
        f.write('{"schema_version":1,"target":"d5')  # as if killed while writing a line
    r = CliRunner().invoke(main, ["probe", "--from", str(listing), "--jsonl", str(out), "--resume", *lab.args(store),
                                  "--per-address", "1", "--concurrency", "3"])
    assert r.exit_code == 1, r.output
    assert f"({first} already in" in r.stdout
    targets = [json.loads(x)["target"] for x in out.read_text().splitlines()]
    assert sorted(targets) == sorted(lab.domains)  # each exactly once
    # Probed twice at most: the 3 sessions open at the kill, and up to 3 finished whose lines were not yet written.
    assert sum(lab.farm.totals().values()) <= 60 + 2 * 3


# --- the terminal --------------------------------------------------------------------------------------


def test_a_bulk_run_shows_progress_and_an_eta_on_a_terminal(lab_of: Any, store: Path, tmp_path: Path) -> None:
    addrs = addresses(2)
    domains, hosts = spread(12, addrs)
    lab = lab_of(addrs, domains, hosts, delay=0.3)  # six rounds of 0.3 s: click knows an ETA after a second
    listing = tmp_path / "domains.txt"
    listing.write_text("".join(f"{d}\n" for d in lab.domains))
    out = tmp_path / "out.jsonl"
    code, stdout, tty = certkit_on_a_terminal("probe", "--from", str(listing), "--jsonl", str(out),
                                              *lab.args(store), "--per-address", "1")
    assert code == 1 and "12 targets in" in stdout
    frames = [f.replace("\x1b[?25l", "").replace("\x1b[?25h", "").rstrip() for f in tty.split("\r") if f.strip()]
    assert any(re.fullmatch(r"\[[#-]{20}\] \d+/\d+ address(es)?( \(\d+ targets? to resolve\))?  eta \d\d:\d\d:\d\d", f)
               for f in frames), frames
    assert frames[-1].startswith("[####################] 12/12 addresses")


# --- the distributed executor ---------------------------------------------------------------------------


def test_dask_local_cluster_keeps_the_limits_global_and_every_target_once(lab_of: Any) -> None:
    pytest.importorskip("distributed")
    from certkit.adapters.executor import owner_of, parse_executor, probe_distributed

    addrs = addresses(6, per_net=2)
    domains, hosts = spread(36, addrs)
    domains.update({f"s{i}.test": "mx0.farm.test" for i in range(6)})  # six more on one MX: one session
    lab = lab_of(addrs, domains, hosts, delay=0.15)
    options = lab.options(per_address=2, per_net=3, concurrency=20, share_sessions=True, mta_sts="auto",
                          sts_policy_port=1)
    results = list(probe_distributed(lab.domains, parse_executor("dask-local:2"), anchors=[ROOT.cert],
                                     options=options, window=40, batch=4))
    assert sorted(r.target for r in results) == sorted(lab.domains)
    assert all(r.addresses[0].reached and r.mta_sts is not None for r in results)
    assert max(lab.farm.peaks().values()) <= 2 and max(g.peak for g in lab.farm.nets.values()) <= 3
    assert sum(lab.farm.totals().values()) == 36  # the six shared the session of mx0's domain
    assert {r.addresses[0].session_of for r in results if r.target.startswith("s")} - {None} <= {
        "d0.test", *(f"s{i}.test" for i in range(6))}
    assert results[0].addresses[0].session is not None and results[0].addresses[0].session.tls is not None
    workers = ["tcp://a", "tcp://b", "tcp://c"]
    assert owner_of("127.1.0.1", workers) == owner_of("127.1.0.200", workers)  # one owner per /24


def test_dask_local_cluster_answers_a_target_given_twice_twice(lab_of: Any) -> None:
    """A library caller may list a target twice (the CLI drops repeats): each gets its result, none is lost."""
    pytest.importorskip("distributed")
    from certkit.adapters.executor import parse_executor, probe_distributed

    addrs = addresses(2)
    domains, hosts = spread(4, addrs)
    lab = lab_of(addrs, domains, hosts)
    twice = [*lab.domains, lab.domains[0]]
    results = list(probe_distributed(twice, parse_executor("dask-local:2"), anchors=[ROOT.cert],
                                     options=lab.options(share_sessions=False), window=8, batch=2))
    assert sorted(r.target for r in results) == sorted(twice)
    assert all(r.addresses and r.addresses[0].reached for r in results)
