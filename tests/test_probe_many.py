"""Many targets: results in input order, bounded concurrency, progress on stderr only when it is a terminal."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from certkit.adapters.truststore import TrustStore
from certkit.checks.probe import AddressResult, ProbeOptions, probe_sync
from certkit.cli import main
from tests.pki import make_intermediate, make_leaf, make_root
from tests.smtp_servers import Handler, Scripted, SmtpTestServer

Start = Callable[[Handler], SmtpTestServer]
ROOT = make_root("Many Root")
INTER = make_intermediate(ROOT, "Many CA")
SERVER = make_leaf(INTER, ["mx1.fabrikam.test", "fabrikam.test"])


class Gauge:
    """Counts the sessions open at the same time across servers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.total = 0

    def wrap(self, handler: Handler, delay: float) -> Handler:
        def run(sock: socket.socket) -> None:
            with self.lock:
                self.now += 1
                self.total += 1
                self.peak = max(self.peak, self.now)
            try:
                time.sleep(delay)
                handler(sock)
            finally:
                with self.lock:
                    self.now -= 1

        return run


def test_concurrency_is_bounded_and_used(smtp_server: Start) -> None:
    gauge = Gauge()
    servers = [smtp_server(gauge.wrap(Scripted(identity=SERVER, chain=[INTER.cert]), 0.15)) for _ in range(12)]
    results = probe_sync([f"127.0.0.1:{s.port}" for s in servers], anchors=[ROOT.cert],
                         options=ProbeOptions(validator="postfix", domain="fabrikam.test", timeout=3, concurrency=3))
    assert gauge.total == 12
    assert gauge.peak == 3  # never more than --concurrency, and it does run that many at once
    assert all(r.addresses[0].ok for r in results)


def test_concurrency_above_the_default_thread_pool(smtp_server: Start) -> None:
    gauge = Gauge()
    servers = [smtp_server(gauge.wrap(Scripted(identity=SERVER, chain=[INTER.cert]), 0.3)) for _ in range(24)]
    probe_sync([f"127.0.0.1:{s.port}" for s in servers], anchors=[ROOT.cert],
               options=ProbeOptions(validator="postfix", domain="fabrikam.test", timeout=3, concurrency=24))
    assert gauge.peak > 12  # not capped by asyncio's default executor (min(32, cpus + 4) threads)


def test_results_in_input_order_whatever_finishes_first(smtp_server: Start, tmp_path: Path) -> None:
    delays = [0.4, 0.0, 0.25, 0.05, 0.3, 0.1]
    servers = [smtp_server(Gauge().wrap(Scripted(identity=SERVER, chain=[INTER.cert], hostname=f"mx{i}.test"), d))
               for i, d in enumerate(delays)]
    targets = [f"127.0.0.1:{s.port}" for s in servers]
    finished: list[str] = []

    def progress(a: AddressResult) -> None:
        finished.append(a.target)

    results = probe_sync(targets, anchors=[ROOT.cert], progress=progress,
                         options=ProbeOptions(validator="postfix", domain="fabrikam.test", timeout=3))
    assert [r.target for r in results] == targets
    assert [r.addresses[0].session.banner.text.split()[1] for r in results  # type: ignore[union-attr]
            ] == [f"mx{i}.test" for i in range(len(delays))]
    assert sorted(finished) == sorted(targets)
    assert finished != targets  # they did finish in another order

    # The command: targets from the arguments first, then --from FILE in file order (comments and blanks skipped).
    store = tmp_path / "trust"
    TrustStore(store).add(ROOT.cert, label="many")
    listing = tmp_path / "targets.txt"
    listing.write_text("# partners\n" + "\n".join(f"{t}  # server {i}" for i, t in enumerate(targets[1:], 1))
                       + "\n\n127.0.0.1:1\n")
    r = CliRunner().invoke(main, ["probe", targets[0], "--from", str(listing), "--store", str(store),
                                  "--managed-only", "--validator", "postfix", "--domain", "fabrikam.test",
                                  "--timeout", "3", "--concurrency", "2", "--json"])
    assert r.exit_code == 1, r.output
    assert [t["target"] for t in json.loads(r.stdout)["results"]] == [*targets, "127.0.0.1:1"]


def test_no_progress_when_stderr_is_not_a_terminal(smtp_server: Start, tmp_path: Path) -> None:
    # The bar on a real terminal: tests/test_cli_term.py (a pseudo-terminal).
    servers = [smtp_server(Scripted(identity=SERVER, chain=[INTER.cert])) for _ in range(3)]
    store = tmp_path / "trust"
    TrustStore(store).add(ROOT.cert, label="many")
    r = CliRunner().invoke(main, ["probe", *(f"127.0.0.1:{s.port}" for s in servers), "127.0.0.1:1", "--store",
                                  str(store), "--managed-only", "--validator", "postfix", "--domain",
                                  "fabrikam.test", "--timeout", "3", "--json"])
    assert r.exit_code == 1
    data = json.loads(r.stdout)  # stdout holds the report and nothing else
    assert len(data["results"]) == 4
    assert r.stderr == ""
