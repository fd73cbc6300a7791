"""Bulk probing (issue 15): domains per second under the per-address limit, memory per 10,000 targets in flight,
the resume overhead, and the same run through Dask's LocalCluster.

    .venv/bin/python bench/bench_bulk.py [--domains 2000] [--addresses 200] [--concurrency 100] [--skip-dask]

The farm (tests/bulk_farm.py) runs in a child process: ``--domains`` MX hosts ``mxN.farm.test`` (2,000
endpoints: each its own SNI name, so its own session) behind ``--addresses`` loopback addresses
``127.X.Y.1``, each in its own /24, one port; RSA-2048 root, intermediate and leaf (``*.farm.test``), the
chain sent. A DNS server in a second child process gives domain ``dN.test`` the MX host ``mx(N mod
domains).farm.test`` and each host its address. Every run is ``certkit probe --from FILE --jsonl OUT
--validator postfix --name mx.farm.test --mta-sts off --dane off`` in a child process (wall time and its
peak RSS, VmHWM, read from /proc while it runs):

* ``limits``: the domains with ``--per-address 2`` (``--per-net 8``, the defaults), then without limits;
* ``memory``: 10,000 domains on the same hosts (sessions shared: five domains per MX host) with ``--window
  10000`` (all in flight at once) against ``--window 100``: the difference is the memory of 9,900 targets;
* ``resume``: the run killed (SIGKILL) when half its lines are written, then ``--resume``; and ``--resume``
  over a complete file (reading and skipping every line, probing nothing);
* ``dask``: the domains with ``--executor dask-local:2`` (the cluster's start included, and reported).

Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT_DIR))
CERTKIT = [sys.executable, "-m", "certkit"]


def _serve_farm(addrs: list[str], port: int, cert: str, key: str, ready: multiprocessing.synchronize.Event) -> None:
    import asyncio

    from tests.bulk_farm import Farm

    farm = Farm(addrs, port, Path(cert), Path(key))
    event = threading.Event()
    threading.Thread(target=lambda: (event.wait(), ready.set()), daemon=True).start()
    asyncio.run(farm.serve(event))


def _serve_dns(zones: dict[str, dict[str, list[str]]], where: str, ready: multiprocessing.synchronize.Event) -> None:
    from tests.dnsserver import DnsServer

    server = DnsServer(zones)
    Path(where).write_text(server.address)
    ready.set()
    threading.Event().wait()


def run(cmd: list[str], *, kill_at_lines: int = 0, out: Path | None = None) -> tuple[float, int, int]:
    """(wall seconds, peak RSS in KiB, exit code) of ``cmd``; with ``kill_at_lines``, SIGKILL it once ``out``
    has that many lines."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT_DIR)})
    peak = 0
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak = max(peak, int(status.split("VmHWM:")[1].split()[0]))
        except (OSError, IndexError, ValueError):
            pass
        if kill_at_lines and out is not None and out.exists() and out.read_bytes().count(b"\n") >= kill_at_lines:
            proc.send_signal(signal.SIGKILL)
        time.sleep(0.02)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode not in (0, 1, -9):
        print(err[-2000:])
    return time.perf_counter() - t0, peak, proc.returncode


def lines_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domains", type=int, default=2000)
    ap.add_argument("--addresses", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--skip-dask", action="store_true")
    args = ap.parse_args()

    from cryptography import x509

    from certkit.adapters.truststore import TrustStore
    from tests import pki
    from tests.bulk_farm import addresses, free_port, zones

    work = Path(tempfile.mkdtemp(prefix="certkit-bench-bulk-"))
    kind = {"key_type": "rsa", "bits": 2048, "fresh_key": True}
    root = pki.make_root("Farm Root", **kind)
    inter = pki.make_intermediate(root, "Farm CA", **kind)
    leaf = pki.make_leaf(inter, ["*.farm.test"], **kind)
    (work / "server.pem").write_bytes(leaf.pem + inter.pem)
    (work / "server.key").write_bytes(leaf.key_pem)
    store = work / "trust"
    TrustStore(store).add(x509.load_pem_x509_certificate(root.pem), label="farm root")

    addrs = addresses(args.addresses)
    port = free_port(addrs)
    hosts = {f"mx{i}.farm.test": addrs[i % len(addrs)] for i in range(args.domains)}
    many = 10_000
    domains = {f"d{i}.test": f"mx{i % args.domains}.farm.test" for i in range(max(many, args.domains))}
    ready_farm, ready_dns = multiprocessing.Event(), multiprocessing.Event()
    farm = multiprocessing.Process(target=_serve_farm, daemon=True, args=(
        addrs, port, str(work / "server.pem"), str(work / "server.key"), ready_farm))
    dns = multiprocessing.Process(target=_serve_dns, daemon=True,
                                  args=(zones(domains, hosts), str(work / "dns"), ready_dns))
    farm.start()
    dns.start()
    try:
        if not (ready_farm.wait(120) and ready_dns.wait(60)):
            raise SystemExit("the farm or its DNS did not start")
        (work / "domains.txt").write_text("".join(f"d{i}.test\n" for i in range(args.domains)))
        (work / "many.txt").write_text("".join(f"d{i}.test\n" for i in range(many)))
        base = [*CERTKIT, "probe", "--store", str(store), "--managed-only", "--validator", "postfix", "--name",
                "mx.farm.test", "--mta-sts", "off", "--dane", "off", "--timeout", "30", "--port", str(port),
                "--nameserver", (work / "dns").read_text(), "--concurrency", str(args.concurrency)]
        print(f"farm: {args.domains} MX hosts behind {len(addrs)} addresses ({addrs[0]} ... {addrs[-1]}, one /24 "
              f"each) on port {port}; {os.cpu_count()} CPUs; {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
        bench(args, base, work, many)
    finally:
        farm.terminate()
        dns.terminate()
        shutil.rmtree(work, ignore_errors=True)


def bench(args: argparse.Namespace, base: list[str], work: Path, many: int) -> None:
    n = args.domains
    out = work / "out.jsonl"

    def one(name: str, listing: str, *extra: str) -> tuple[float, int]:
        seconds, rss, code = run([*base, "--from", str(work / listing), "--jsonl", str(out), *extra])
        lines = lines_of(out)
        ok = sum(1 for x in lines if x["exit_code"] == 0)
        print(f"{name:<46} {seconds:7.2f} s  {len(lines) / seconds:7.1f} domains/s  peak RSS {rss / 1024:6.1f} MiB  "
              f"{ok}/{len(lines)} ok, exit {code}", flush=True)
        return seconds, rss

    one(f"{n} domains, --per-address 2 --per-net 8", "domains.txt")
    one(f"{n} domains, no limits", "domains.txt", "--per-address", "0", "--per-net", "0")
    _, small = one(f"{many} domains (shared sessions), --window 100", "many.txt", "--window", "100")
    _, large = one(f"{many} domains (shared sessions), --window {many}", "many.txt", "--window", str(many))
    print(f"memory: {(large - small) / 1024:.1f} MiB for {many - 100} more targets in flight "
          f"({(large - small) / 1024 * 10_000 / (many - 100):.1f} MiB per 10,000)")

    straight, _, _ = run([*base, "--from", str(work / "domains.txt"), "--jsonl", str(out)])
    out.unlink()
    first, _, _ = run([*base, "--from", str(work / "domains.txt"), "--jsonl", str(out)], kill_at_lines=n // 2,
                      out=out)
    kept = out.read_bytes().count(b"\n")
    second, _, _ = run([*base, "--from", str(work / "domains.txt"), "--jsonl", str(out), "--resume"])
    final = [x["target"] for x in lines_of(out)]
    print(f"resume: straight {straight:.2f} s; killed at {kept} lines after {first:.2f} s, resumed in {second:.2f} s: "
          f"{first + second:.2f} s in all (+{first + second - straight:.2f} s); {len(final)} lines, "
          f"{len(set(final))} distinct")
    nothing, _, _ = run([*base, "--from", str(work / "many.txt"), "--jsonl", str(work / "many.jsonl")])
    skip, _, _ = run([*base, "--from", str(work / "many.txt"), "--jsonl", str(work / "many.jsonl"), "--resume"])
    print(f"resume over a complete file of {many} lines (nothing left to probe): {skip:.2f} s")

    if not args.skip_dask:
        one(f"{n} domains, --executor dask-local:2 (cluster start incl.)", "domains.txt", "--executor",
            "dask-local:2")


if __name__ == "__main__":
    main()
