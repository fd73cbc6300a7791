"""The watch loop's cost per target per cycle: ``certkit watch`` over loopback endpoints, next to the bare probe.

    .venv/bin/python bench/bench_watch.py [--endpoints 50] [--rounds 5] [--key rsa|ec]

The endpoints are bench_probe.py's: ``--endpoints`` STARTTLS servers on 127.0.0.1 in a child process (root,
intermediate and leaf, chain sent, CRLs over loopback HTTP). A CA home with 20 certificates and a published CRL
(its CDP on the same HTTP server) is watched too. Per round, in this process:

* ``probe_sync``: the probe alone over every endpoint (``--validator exchange --domain bench.test``: CRLs fetched
  and checked), the floor of a watch cycle;
* ``Watcher.cycle()``: the whole cycle -- our CA's certificates and CRL (downloaded from its CDP and compared),
  the same probe, each endpoint's certificate compared with the last one and recorded in ``watch.db`` with its
  state -- then the metrics rendered (``exposition``), as one ``watch serve`` tick and one scrape.

Best wall time and least CPU time (this process's threads, ``time.process_time``) over the rounds, per target.
The first cycle (which creates every row) is reported apart. Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT_DIR / "bench"))
sys.path.insert(0, str(ROOT_DIR / "tests"))
sys.path.insert(0, str(ROOT_DIR))


def _measure(fn: object) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()  # type: ignore[operator]
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoints", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--key", choices=("rsa", "ec"), default="rsa")
    args = ap.parse_args()

    import bench_probe
    import pki
    from cryptography.hazmat.primitives import serialization

    from certkit.adapters.metrics import exposition
    from certkit.adapters.watchdb import WatchHistory
    from certkit.ca import CertificateAuthority
    from certkit.checks.probe import ProbeOptions, probe_sync
    from certkit.checks.watch import Watcher, add_target
    from certkit.clock import SystemClock
    from certkit.core.trust import AnchorSet
    from certkit.core.watch import WatchTarget

    work = Path(tempfile.mkdtemp(prefix="certkit-bench-watch-", dir=ROOT_DIR / "bench" / "out"
                                 if (ROOT_DIR / "bench" / "out").is_dir() else None))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        crl_port = s.getsockname()[1]
    os.environ["BENCH_CRL_PORT"] = str(crl_port)
    base = f"http://127.0.0.1:{crl_port}"
    kind = {"key_type": args.key, "bits": 2048, "fresh_key": True}
    root = pki.make_root("Bench Root", org="Bench", **kind)
    inter = pki.make_intermediate(root, "Bench Issuing CA", org="Bench", cdp=f"{base}/root.crl", **kind)
    leaf = pki.make_leaf(inter, ["mx.bench.test", bench_probe.DOMAIN], cdp=f"{base}/inter.crl", **kind)
    der = serialization.Encoding.DER
    (work / "server.pem").write_bytes(leaf.pem + inter.pem)
    (work / "server.key").write_bytes(leaf.key_pem)

    home = work / "home"
    with CertificateAuthority.init(home, name="Contoso Transport CA", passphrase=b"bench", key_type="ec-p256",
                                   crl_url=f"{base}/contoso.crl") as ca:
        for i in range(20):
            ca.issue(f"mx{i}.contoso.com", key_type="ec-p256")
        [info] = ca.publish_crl()
    crls = {"/root.crl": pki.make_crl(root).public_bytes(der), "/inter.crl": pki.make_crl(inter).public_bytes(der),
            "/contoso.crl": info.der_path.read_bytes()}

    ready = multiprocessing.Event()
    ports_file = work / "ports"
    child = multiprocessing.Process(target=bench_probe._serve,
                                    args=(str(work), args.endpoints, ready, str(ports_file), crls), daemon=True)
    child.start()
    if not ready.wait(60):
        raise SystemExit("the endpoints did not start")
    ports = [int(p) for p in ports_file.read_text().split()]
    targets = [f"127.0.0.1:{p}" for p in ports]
    options = {"validator": "exchange", "domain": bench_probe.DOMAIN, "timeout": 10.0, "dane": "off",
               "mta_sts": "off"}
    clock = SystemClock()
    with WatchHistory.open(home) as history:
        for t in targets:
            add_target(history, WatchTarget(t, "partner", "added", options), clock)
    anchors = AnchorSet.of([root.cert])
    watcher = Watcher(home, clock=clock, anchors=anchors)
    n = len(targets)
    print(f"{n} STARTTLS endpoints on 127.0.0.1 ({'RSA-2048' if args.key == 'rsa' else 'EC P-256'} chain, CRLs "
          f"over HTTP), a CA with 20 certificates and a CRL; {os.cpu_count()} CPUs; "
          f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")

    def probe() -> None:
        results = probe_sync(targets, anchors=anchors, options=ProbeOptions(**options))  # type: ignore[arg-type]
        assert all(a.ok for r in results for a in r.addresses), "an endpoint did not come back ok"

    def cycle() -> None:
        report = watcher.cycle()
        assert all(t.success for t in report.targets) and len(report.targets) == n, report.targets
        exposition(report)

    first = _measure(cycle)
    rows: dict[str, list[tuple[float, float]]] = {"probe_sync (the probe alone)": [], "watch cycle + scrape": []}
    for _ in range(args.rounds):
        rows["probe_sync (the probe alone)"].append(_measure(probe))
        rows["watch cycle + scrape"].append(_measure(cycle))
    print(f"first cycle (creates the rows): wall {first[0]:.3f} s, CPU {first[1]:.3f} s "
          f"({first[0] / n * 1000:.1f} ms wall per target)")
    print(f"{'':32} {'wall/cycle':>11} {'CPU/cycle':>10} {'wall/target':>12} {'CPU/target':>11}")
    for name, runs in rows.items():
        wall, cpu = min(r[0] for r in runs), min(r[1] for r in runs)
        print(f"{name:32} {wall:10.3f}s {cpu:9.3f}s {wall / n * 1000:10.1f}ms {cpu / n * 1000:9.1f}ms")
    probe_cpu = min(r[1] for r in rows["probe_sync (the probe alone)"])
    cycle_cpu = min(r[1] for r in rows["watch cycle + scrape"])
    print(f"what the watch adds per target: {(cycle_cpu - probe_cpu) / n * 1000:.2f} ms CPU")
    child.terminate()


if __name__ == "__main__":
    main()
