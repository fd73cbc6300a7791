"""STARTTLS probe cost: certkit vs a bare asyncio+ssl handshake loop vs sslyze 6 vs posttls-finger, same endpoints.

    .venv/bin/python bench/bench_probe.py [--key rsa|ec] [--endpoints 200] [--concurrency 50] [--rounds 3]
                                          [--skip-sslyze] [--skip-finger] [--serve] [--dane]

``--dane`` measures what DANE adds instead: certkit on host-name targets ``mxN.bench.test:PORT`` resolved
through a DNS server in a child process that sets the AD bit on every answer (standing in for a
validating resolver), once with ``--dane off`` and once with ``--dane auto`` (a ``3 1 1`` record per host).

The endpoints: ``--endpoints`` SMTP servers on 127.0.0.1, each on its own port, served by one asyncio
loop in a child process (so the servers do not compete with the probing process for its GIL). Each
one speaks ESMTP with STARTTLS (stdlib ``ssl``; ``--key rsa`` (default): RSA-2048 root, intermediate and
leaf, ``--key ec``: EC P-256; the leaf is signed by the intermediate and the chain is sent),
then answers MAIL, RCPT, RSET and QUIT. The leaf and the intermediate carry CRL distribution points
served by a loopback HTTP server in the same child process.

What each tool does per endpoint:

* certkit: ``certkit probe --from FILE --json --validator exchange --domain bench.test`` (one process):
  banner, EHLO, STARTTLS, handshake, EHLO, MAIL FROM, RCPT TO, RSET, QUIT, then path building and
  verification against the trust store with the Domain Security name rule, the CRLs fetched (once
  per run) and checked for every CA-issued certificate, and the diagnosis. Every endpoint must come
  back "would deliver".
* the bare loop: a separate Python process (this script with ``--bare-client``, which imports only the
  standard library) that, with asyncio, stdlib ``ssl`` and the same concurrency, connects to every
  endpoint, reads the banner, sends EHLO and STARTTLS, does the TLS handshake (verifying the chain
  against the root as cafile and the name mx.bench.test, both in OpenSSL) and closes. The floor
  that any Python STARTTLS prober pays.
* sslyze 6: ``sslyze --starttls smtp --certinfo --certinfo_ca_file ROOT --targets_in FILE`` with
  targets written ``mx.bench.test:PORT{127.0.0.1}`` so that it validates the MX name (one
  process, its own concurrency): connectivity test plus certificate info and validation against
  the CA file; no SMTP transaction, no revocation, no name rule of Domain Security. Run from a
  separate venv (``bench/.venv-sslyze``; sslyze pins its own cryptography).
* posttls-finger (ships with Postfix): one process per endpoint in a sequential loop,
  ``posttls-finger -c -l secure -h native -F ROOT -P /dev/null "[127.0.0.1]:PORT" bench.test``:
  STARTTLS, handshake, chain and name verification; no transaction, no revocation.

Each round runs every tool once, in turn, on the same endpoints (so that load on the machine hits all of
them alike). For each tool the best wall time and the least client CPU time (user + system of the
client process and its children, from ``getrusage(RUSAGE_CHILDREN)`` deltas) over the rounds are
reported, with every round. ``--serve`` only starts the endpoints and prints the client command lines
(for profiling), until interrupted. Timings are printed, never asserted: this is not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# cryptography, tests/pki.py and certkit are imported in main() only: the --bare-client process must
# start with the standard library alone.

ROOT_DIR = Path(__file__).resolve().parents[1]

SSLYZE = ROOT_DIR / "bench" / ".venv-sslyze" / "bin" / "sslyze"
CERTKIT = Path(sys.executable).with_name("certkit")
DOMAIN = "bench.test"


# --- the endpoints (child process) ---------------------------------------------------------------------


async def _session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ctx: ssl.SSLContext) -> None:
    async def send(text: str) -> None:
        writer.write(text.encode() + b"\r\n")
        await writer.drain()

    tls = False
    try:
        await send("220 mx.bench.test ESMTP bench")
        while True:
            line = await asyncio.wait_for(reader.readline(), 30)
            if not line:
                return
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb in (b"EHLO", b"HELO"):
                caps = ["mx.bench.test", "PIPELINING", "SIZE 10240000"] + ([] if tls else ["STARTTLS"])
                caps.append("8BITMIME")
                await send("\r\n".join(f"250{'-' if i < len(caps) - 1 else ' '}{c}" for i, c in enumerate(caps)))
            elif verb == b"STARTTLS" and not tls:
                await send("220 2.0.0 Ready to start TLS")
                await writer.start_tls(ctx)
                tls = True
            elif verb == b"MAIL":
                await send("250 2.1.0 Ok")
            elif verb == b"RCPT":
                await send("250 2.1.5 Ok")
            elif verb in (b"RSET", b"NOOP"):
                await send("250 2.0.0 Ok")
            elif verb == b"QUIT":
                await send("221 2.0.0 Bye")
                return
            else:
                await send("502 5.5.2 Error: command not recognized")
    except (TimeoutError, OSError, ssl.SSLError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


def _serve(folder: str, count: int, ready: multiprocessing.synchronize.Event, ports_out: str,
           crl_files: dict[str, bytes]) -> None:
    from certkit.lab.httpfiles import HttpFiles

    # A client that closes without close_notify makes asyncio's TLS layer log a warning per connection.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    _crl_http = HttpFiles(crl_files, port=int(os.environ["BENCH_CRL_PORT"]))  # serves until the process ends

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(f"{folder}/server.pem", f"{folder}/server.key")

    async def main() -> None:
        servers = []
        for _ in range(count):
            servers.append(await asyncio.start_server(lambda r, w: _session(r, w, ctx), "127.0.0.1", 0, backlog=256))
        ports = [s.sockets[0].getsockname()[1] for s in servers]
        Path(ports_out).write_text("\n".join(map(str, ports)))
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def _serve_dns(zones: dict[str, dict[str, list[str]]], ready: multiprocessing.synchronize.Event,
               port_out: str) -> None:
    """A DNS server that answers like a validating resolver (the AD bit on every answer), in its own process."""
    import dns.flags
    import dns.message
    from dnsserver import DnsServer

    class Validated(DnsServer):
        def answer(self, wire: bytes) -> bytes | None:
            reply = super().answer(wire)
            if reply is None:
                return None
            response = dns.message.from_wire(reply)
            response.flags |= dns.flags.AD
            return response.to_wire()

    server = Validated(zones)
    Path(port_out).write_text(server.address)
    ready.set()
    threading.Event().wait()


# --- the tools ------------------------------------------------------------------------------------------


def run_certkit(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    seconds = time.perf_counter() - t0
    data = json.loads(out.stdout)
    addrs = [a for r in data["results"] for a in r["addresses"]]
    ok = sum(1 for a in addrs if a["ok"] and not a["findings"])
    rcpt = sum(1 for a in addrs if any(t["text"].startswith("250 2.1.5") for t in a["transcript"]))
    codes = sorted({f["code"] for a in addrs for f in a["findings"]})
    return seconds, f"{ok}/{len(addrs)} would deliver, {rcpt} RCPT accepted, exit {out.returncode}" + (
        f", codes {codes}" if codes else "")


def run_sslyze(ports: list[int], root_pem: Path, work: Path) -> tuple[float, str]:
    out_json = work / "sslyze.json"
    # host:port{ip}: connect to 127.0.0.1 but validate (and send SNI) for the MX name, as certkit's name rule does.
    targets = work / "sslyze-targets.txt"
    targets.write_text("".join(f"mx.bench.test:{p}{{127.0.0.1}}\n" for p in ports))
    cmd = [str(SSLYZE), "--starttls", "smtp", "--certinfo", "--certinfo_ca_file", str(root_pem), "--targets_in",
           str(targets), "--json_out", str(out_json), "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    seconds = time.perf_counter() - t0
    try:
        data = json.loads(out_json.read_text())
    except (OSError, ValueError):
        return seconds, f"no JSON (exit {proc.returncode}): {proc.stderr[-300:]}"
    done = trusted = 0
    for res in data.get("server_scan_results", []):
        cert = (res.get("scan_result") or {}).get("certificate_info") or {}
        if cert.get("status") != "COMPLETED":
            continue
        done += 1
        deployments = (cert.get("result") or {}).get("certificate_deployments") or []
        for dep in deployments:
            if any(v.get("was_validation_successful") for v in dep.get("path_validation_results", [])):
                trusted += 1
                break
    return seconds, f"{done}/{len(data.get('server_scan_results', []))} certinfo completed, {trusted} chain trusted " \
                    f"by the CA file, exit {proc.returncode}"


def run_finger(ports: list[int], root_pem: Path, work: Path) -> tuple[float, str]:
    finger = shutil.which("posttls-finger") or "/usr/sbin/posttls-finger"
    conf = work / "postfix-conf"
    conf.mkdir(exist_ok=True)
    (conf / "main.cf").write_text("compatibility_level = 3.6\n")
    old = time.time() - 10  # a main.cf changed within the last second slows every Postfix command
    os.utime(conf / "main.cf", (old, old))
    env = {**os.environ, "MAIL_CONFIG": str(conf)}
    verified = 0
    t0 = time.perf_counter()
    for port in ports:
        out = subprocess.run([finger, "-c", "-l", "secure", "-h", "native", "-F", str(root_pem), "-P", "/dev/null",
                              f"[127.0.0.1]:{port}", DOMAIN], capture_output=True, text=True, timeout=60,
                             check=False, env=env)
        verified += "Verified TLS connection established" in out.stdout + out.stderr
    seconds = time.perf_counter() - t0
    return seconds, f"{verified}/{len(ports)} verified"


async def _bare_one(port: int, ctx: ssl.SSLContext, server_name: str, timeout: float) -> bool:
    async def reply(reader: asyncio.StreamReader) -> bytes:
        while True:  # the last line of a reply has a space after the code
            line = await reader.readline()
            if len(line) < 4 or line[3:4] != b"-":
                return line

    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            if not (await reply(reader)).startswith(b"220"):
                return False
            writer.write(b"EHLO bare.bench.test\r\n")
            if not (await reply(reader)).startswith(b"250"):
                return False
            writer.write(b"STARTTLS\r\n")
            if not (await reply(reader)).startswith(b"220"):
                return False
            await writer.start_tls(ctx, server_hostname=server_name)
            return writer.get_extra_info("peercert") is not None
    except (OSError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1)


def bare_client(targets: Path, cafile: Path, concurrency: int) -> None:
    """The --bare-client process: banner, EHLO, STARTTLS, verified handshake, close; prints a JSON summary."""
    ports = [int(line.rsplit(":", 1)[1]) for line in targets.read_text().split()]
    ctx = ssl.create_default_context(cafile=str(cafile))  # CERT_REQUIRED, check_hostname, the bench root only

    async def run() -> int:
        sem = asyncio.Semaphore(concurrency)

        async def one(port: int) -> bool:
            async with sem:
                return await _bare_one(port, ctx, "mx.bench.test", 10)

        return sum(await asyncio.gather(*(one(p) for p in ports)))

    ok = asyncio.run(run())
    print(json.dumps({"ok": ok, "total": len(ports)}))


def run_bare(targets: Path, root_pem: Path, concurrency: int) -> tuple[float, str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--bare-client", str(targets), "--cafile", str(root_pem),
           "--concurrency", str(concurrency)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    seconds = time.perf_counter() - t0
    try:
        data = json.loads(out.stdout)
    except ValueError:
        return seconds, f"no JSON (exit {out.returncode}): {out.stderr[-300:]}"
    return seconds, f"{data['ok']}/{data['total']} verified handshakes after STARTTLS, exit {out.returncode}"


def _children_cpu() -> float:
    """User + system CPU seconds of the reaped children of this process (and of their reaped children)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc), 0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _dane_tools(args: argparse.Namespace, ports: list[int], leaf: Any, work: Path,
                certkit_cmd: list[str]) -> list[tuple[str, Callable[[], tuple[float, str]]]]:
    """certkit on host-name targets with --dane off, then auto: the same DNS for A records, TLSA lookups added."""
    from cryptography import x509

    from certkit.core.dane import tlsa_for

    record = tlsa_for(x509.load_pem_x509_certificate(leaf.pem), 3).text()
    zones = {f"mx{i}.bench.test": {"A": ["127.0.0.1"]} for i in range(len(ports))}
    zones.update({f"_{p}._tcp.mx{i}.bench.test": {"TLSA": [record]} for i, p in enumerate(ports)})
    ready = multiprocessing.Event()
    where = work / "dns"
    dns_child = multiprocessing.Process(target=_serve_dns, args=(zones, ready, str(where)), daemon=True)
    dns_child.start()
    if not ready.wait(30):
        raise SystemExit("the DNS server did not start")
    names = work / "names.txt"
    names.write_text("".join(f"mx{i}.bench.test:{p}\n" for i, p in enumerate(ports)))
    base = [*certkit_cmd, "--nameserver", where.read_text()]
    base[base.index("--from") + 1] = str(names)
    return [(f"certkit probe --dane auto (--concurrency {args.concurrency})",
             lambda: run_certkit([*base, "--dane", "auto"])),
            (f"certkit probe --dane off (--concurrency {args.concurrency})",
             lambda: run_certkit([*base, "--dane", "off"]))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoints", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3, help="runs per tool; the best is reported")
    ap.add_argument("--skip-sslyze", action="store_true")
    ap.add_argument("--skip-finger", action="store_true")
    ap.add_argument("--key", choices=("rsa", "ec"), default="rsa",
                    help="rsa: RSA-2048 root, intermediate and leaf (default); ec: EC P-256")
    ap.add_argument("--dane", action="store_true",
                    help="instead of the peers: certkit with --dane off and --dane auto on host-name targets "
                         "(A and TLSA records from a DNS server that sets the AD bit), to measure what DANE adds")
    ap.add_argument("--serve", action="store_true",
                    help="only start the endpoints, print the client commands (for profiling); Ctrl-C or SIGTERM ends")
    ap.add_argument("--bare-client", type=Path, metavar="TARGETS", help=argparse.SUPPRESS)
    ap.add_argument("--cafile", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare_client is not None:
        bare_client(args.bare_client, args.cafile, args.concurrency)
        return

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    sys.path.insert(0, str(ROOT_DIR / "tests"))
    import pki

    from certkit.adapters.truststore import TrustStore

    work = Path(tempfile.mkdtemp(prefix="certkit-bench-probe-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        crl_port = s.getsockname()[1]
    os.environ["BENCH_CRL_PORT"] = str(crl_port)
    base = f"http://127.0.0.1:{crl_port}"
    kind = {"key_type": args.key, "bits": 2048, "fresh_key": True}  # three distinct keys
    root = pki.make_root("Bench Root", org="Bench", **kind)
    inter = pki.make_intermediate(root, "Bench Issuing CA", org="Bench", cdp=f"{base}/root.crl", **kind)
    leaf = pki.make_leaf(inter, ["mx.bench.test", DOMAIN], cdp=f"{base}/inter.crl", **kind)
    key_text = "RSA-2048" if args.key == "rsa" else "EC P-256"
    der = serialization.Encoding.DER
    crls = {"/root.crl": pki.make_crl(root).public_bytes(der), "/inter.crl": pki.make_crl(inter).public_bytes(der)}
    (work / "server.pem").write_bytes(leaf.pem + inter.pem)
    (work / "server.key").write_bytes(leaf.key_pem)
    root_pem = work / "root.pem"
    root_pem.write_bytes(root.pem)
    store = work / "trust"
    TrustStore(store).add(x509.load_pem_x509_certificate(root.pem), label="bench root")

    ready = multiprocessing.Event()
    ports_file = work / "ports"
    child = multiprocessing.Process(target=_serve, args=(str(work), args.endpoints, ready, str(ports_file), crls),
                                    daemon=True)
    child.start()
    try:
        if not ready.wait(60):
            raise SystemExit("the endpoints did not start")
        ports = [int(p) for p in ports_file.read_text().split()]
        targets = work / "targets.txt"
        targets.write_text("".join(f"127.0.0.1:{p}\n" for p in ports))
        print(f"{len(ports)} STARTTLS endpoints on 127.0.0.1 ({key_text} root, intermediate and leaf, chain sent; "
              f"CRLs on :{crl_port}); {os.cpu_count()} CPUs; {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
        assert child.pid is not None
        certkit_cmd = [str(CERTKIT), "probe", "--from", str(targets), "--store", str(store), "--managed-only",
                       "--validator", "exchange", "--domain", DOMAIN, "--json", "--concurrency",
                       str(args.concurrency), "--timeout", "10",
                       # 200 endpoints on one address: the per-address limit (2) would measure politeness.
                       "--per-address", "0", "--per-net", "0"]
        if args.serve:
            print("certkit:", " ".join(certkit_cmd))
            print("bare:   ", " ".join([sys.executable, str(Path(__file__).resolve()), "--bare-client", str(targets),
                                         "--cafile", str(root_pem), "--concurrency", str(args.concurrency)]),
                  flush=True)
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # kill PID also stops the endpoints
            with contextlib.suppress(KeyboardInterrupt):
                child.join()
            return

        tools: list[tuple[str, Callable[[], tuple[float, str]]]] = [
            (f"certkit probe (--concurrency {args.concurrency})", lambda: run_certkit(certkit_cmd)),
            (f"bare asyncio+ssl loop (concurrency {args.concurrency})",
             lambda: run_bare(targets, root_pem, args.concurrency)),
        ]
        if args.dane:
            tools = _dane_tools(args, ports, leaf, work, certkit_cmd)
        elif not args.skip_sslyze:
            if SSLYZE.exists():
                tools.append(("sslyze --starttls smtp --certinfo", lambda: run_sslyze(ports, root_pem, work)))
            else:
                print(f"sslyze not found at {SSLYZE}: python3 -m venv bench/.venv-sslyze && "
                      "bench/.venv-sslyze/bin/pip install 'sslyze>=6,<7'")
        if not args.skip_finger and not args.dane:
            tools.append(("posttls-finger, sequential loop", lambda: run_finger(ports, root_pem, work)))

        # Round-robin: every round runs each tool once, so that load on the machine hits all of them alike.
        walls: dict[str, list[float]] = {name: [] for name, _ in tools}
        cpus: dict[str, list[float]] = {name: [] for name, _ in tools}
        server: dict[str, list[float]] = {name: [] for name, _ in tools}
        notes: dict[str, str] = {}
        for _ in range(args.rounds):
            for name, run in tools:
                cpu0, srv0 = _children_cpu(), _cpu_seconds(child.pid or 0)
                seconds, note = run()
                cpus[name].append(_children_cpu() - cpu0)
                server[name].append(_cpu_seconds(child.pid or 0) - srv0)
                walls[name].append(seconds)
                notes.setdefault(name, note)
                if note != notes[name]:
                    notes[name] += f" | other round: {note}"

        best_wall = {name: min(v) for name, v in walls.items()}
        best_cpu = {name: min(v) for name, v in cpus.items()}
        ours, bare = tools[0][0], tools[1][0]
        print(f"{'tool':<42} {'wall s':>7} {'ms/endp':>8} {'vs certkit':>10} {'client CPU s':>13} "
              f"{'server CPU s':>13}  result")
        for name, _ in tools:
            print(f"{name:<42} {best_wall[name]:7.2f} {1000 * best_wall[name] / len(ports):8.1f} "
                  f"{best_wall[name] / best_wall[ours]:9.2f}x {best_cpu[name]:13.2f} {min(server[name]):13.2f}  "
                  f"{notes[name]}")
            print(f"{'':<42} rounds: wall {'/'.join(f'{x:.2f}' for x in walls[name])} s, "
                  f"client CPU {'/'.join(f'{x:.2f}' for x in cpus[name])} s")
        if args.dane:
            print(f"--dane auto / --dane off: client CPU {best_cpu[ours] / best_cpu[bare]:.2f}x, "
                  f"wall {best_wall[ours] / best_wall[bare]:.2f}x")
            return
        print(f"certkit / bare loop: client CPU {best_cpu[ours] / best_cpu[bare]:.2f}x (target <= 1.5x), "
              f"wall {best_wall[ours] / best_wall[bare]:.2f}x")
        sslyze = next((n for n, _ in tools if n.startswith("sslyze")), None)
        if sslyze is not None:
            print(f"sslyze / certkit wall: {best_wall[sslyze] / best_wall[ours]:.2f}x (target >= 5x)")
    finally:
        child.terminate()
        child.join(5)
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    main()
