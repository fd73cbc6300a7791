"""STARTTLS probe throughput: certkit vs sslyze 6 vs a loop of posttls-finger, on the same 200 endpoints.

    .venv/bin/python bench/bench_probe.py [--endpoints 200] [--concurrency 50] [--rounds 3] [--skip-sslyze]
                                          [--skip-finger]

The endpoints: ``--endpoints`` SMTP servers on 127.0.0.1, each on its own port, served by one asyncio
loop in a child process (so the servers do not compete with the probing process for its GIL). Each
one speaks ESMTP with STARTTLS (stdlib ``ssl``; EC P-256 leaf signed by an intermediate, chain sent),
then answers MAIL, RCPT, RSET and QUIT. The leaf and the intermediate carry CRL distribution points
served by a loopback HTTP server in the same child process.

What each tool does per endpoint:

* certkit: ``certkit probe --from FILE --json --validator exchange --domain bench.test`` (one process):
  banner, EHLO, STARTTLS, handshake, EHLO, MAIL FROM, RCPT TO, RSET, QUIT, then path building and
  verification against the trust store with the Domain Security name rule, the CRLs fetched (once
  per run) and checked for every CA-issued certificate, and the diagnosis. Every endpoint must come
  back "would deliver".
* sslyze 6: ``sslyze --starttls smtp --certinfo --certinfo_ca_file ROOT --targets_in FILE`` with
  targets written ``mx.bench.test:PORT{127.0.0.1}`` so that it validates the MX name (one
  process, its own concurrency): connectivity test plus certificate info and validation against
  the CA file; no SMTP transaction, no revocation, no name rule of Domain Security. Run from a
  separate venv (``bench/.venv-sslyze``; sslyze pins its own cryptography).
* posttls-finger (ships with Postfix): one process per endpoint in a sequential loop,
  ``posttls-finger -c -l secure -h native -F ROOT -P /dev/null "[127.0.0.1]:PORT" bench.test``:
  STARTTLS, handshake, chain and name verification; no transaction, no revocation.

Each tool runs ``--rounds`` times on the same endpoints; the best time is reported with all rounds.
Timings are printed, never asserted: this is not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import http.server
import json
import multiprocessing
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import pki

from certkit.adapters.truststore import TrustStore

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
    class Crl(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = crl_files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["BENCH_CRL_PORT"])), Crl)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

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


# --- the tools ------------------------------------------------------------------------------------------


def run_certkit(targets: Path, store: Path, concurrency: int) -> tuple[float, str]:
    cmd = [str(CERTKIT), "probe", "--from", str(targets), "--store", str(store), "--managed-only", "--validator",
           "exchange", "--domain", DOMAIN, "--json", "--concurrency", str(concurrency), "--timeout", "10"]
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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc), 0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoints", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3, help="runs per tool; the best is reported")
    ap.add_argument("--skip-sslyze", action="store_true")
    ap.add_argument("--skip-finger", action="store_true")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="certkit-bench-probe-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        crl_port = s.getsockname()[1]
    os.environ["BENCH_CRL_PORT"] = str(crl_port)
    base = f"http://127.0.0.1:{crl_port}"
    root = pki.make_root("Bench Root", org="Bench")
    inter = pki.make_intermediate(root, "Bench Issuing CA", org="Bench", cdp=f"{base}/root.crl")
    leaf = pki.make_leaf(inter, ["mx.bench.test", DOMAIN], cdp=f"{base}/inter.crl")
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
        print(f"{len(ports)} STARTTLS endpoints on 127.0.0.1 (EC P-256 leaf + intermediate, CRLs on :{crl_port}); "
              f"{os.cpu_count()} CPUs; {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
        assert child.pid is not None
        rows: list[tuple[str, float, float, str]] = []

        def timed(name: str, run: Callable[[], tuple[float, str]]) -> None:
            # Best of --rounds (other load on the machine only ever adds time); server CPU of that round.
            best: tuple[float, float, str] | None = None
            all_seconds: list[float] = []
            for _ in range(args.rounds):
                cpu0 = _cpu_seconds(child.pid or 0)
                seconds, note = run()
                all_seconds.append(seconds)
                if best is None or seconds < best[0]:
                    best = (seconds, _cpu_seconds(child.pid or 0) - cpu0, note)
            assert best is not None
            spread = "/".join(f"{x:.2f}" for x in all_seconds)
            rows.append((name, best[0], best[1], f"{best[2]} (rounds: {spread} s)"))

        timed(f"certkit probe (--concurrency {args.concurrency})",
              lambda: run_certkit(targets, store, args.concurrency))
        if not args.skip_sslyze:
            if SSLYZE.exists():
                timed("sslyze --starttls smtp --certinfo", lambda: run_sslyze(ports, root_pem, work))
            else:
                print(f"sslyze not found at {SSLYZE}: python3 -m venv bench/.venv-sslyze && "
                      "bench/.venv-sslyze/bin/pip install 'sslyze>=6,<7'")
        if not args.skip_finger:
            timed("posttls-finger, sequential loop", lambda: run_finger(ports, root_pem, work))
        ours = rows[0][1]
        print(f"{'tool':<40} {'seconds':>8} {'ms/endpoint':>12} {'vs certkit':>11} {'server CPU s':>13}  result")
        for name, seconds, server_cpu, note in rows:
            print(f"{name:<40} {seconds:8.2f} {1000 * seconds / len(ports):12.1f} {seconds / ours:10.1f}x "
                  f"{server_cpu:13.2f}  {note}")
    finally:
        child.terminate()
        child.join(5)
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    main()
