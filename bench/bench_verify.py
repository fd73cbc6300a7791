"""Verification throughput and trust-store scale.

    .venv/bin/python bench/bench_verify.py [--chains 300] [--rounds 5] [--big 10000] [--small 150]

1. The same chains (root -> intermediate -> leaf, EC P-256) verified by
   * certkit.verify_chain (with its explanations),
   * cryptography's PolicyBuilder server verifier called directly (store built once, as certkit does),
   * ``openssl verify`` (one process for all chains: -CAfile root, -untrusted intermediate, N leaf files).
   Prints microseconds per chain and certkit's overhead over raw cryptography (target <= 30 %).
2. Store scale: a TrustStore with ``--big`` anchors and one with ``--small``; time to open the big one
   (target < 1 s), to load its anchors, and verification cost against each (target: big <= 2x small).

Timings are reported, never asserted: this is not a test.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import pki

from certkit.adapters.truststore import TrustStore
from certkit.core.trust import AnchorSet
from certkit.core.verify import verify_chain


def best_of(rounds: int, fn: Callable[[], None]) -> float:
    """Best wall time of ``rounds`` runs (seconds)."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def throughput(n: int, rounds: int) -> None:
    root = pki.make_root("Bench Root", org="Bench")
    inter = pki.make_intermediate(root, "Bench Issuing CA", org="Bench")
    leaves = [pki.make_leaf(inter, [f"mx{i}.bench.example"]) for i in range(n)]
    at = pki.NOW
    names = [f"mx{i}.bench.example" for i in range(n)]
    store = Store([root.cert])
    anchors = AnchorSet.of([root.cert])
    inters = [inter.cert]

    def raw() -> None:
        for leaf, name in zip(leaves, names, strict=True):
            PolicyBuilder().store(store).time(at).build_server_verifier(x509.DNSName(name)).verify(leaf.cert, inters)

    def certkit() -> None:
        for leaf, name in zip(leaves, names, strict=True):
            if not verify_chain(leaf.cert, inters, anchors, name=name, at=at).ok:
                raise SystemExit("certkit rejected a good chain")

    raw()
    certkit()  # warm up (imports, policy objects)
    t_raw = best_of(rounds, raw)
    t_ck = best_of(rounds, certkit)

    t_ossl: float | None = None
    if shutil.which("openssl"):
        with tempfile.TemporaryDirectory() as d:
            dd = Path(d)
            (dd / "root.pem").write_bytes(root.pem)
            (dd / "inter.pem").write_bytes(inter.pem)
            files = []
            for i, leaf in enumerate(leaves):
                f = dd / f"leaf{i}.pem"
                f.write_bytes(leaf.pem)
                files.append(str(f))
            cmd = ["openssl", "verify", "-attime", str(int(at.timestamp())), "-CAfile", str(dd / "root.pem"),
                   "-untrusted", str(dd / "inter.pem"), *files]

            def ossl() -> None:
                out = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if out.returncode != 0 or out.stdout.count(": OK") != n:
                    raise SystemExit(f"openssl verify failed: {out.stderr or out.stdout[:200]}")

            ossl()
            t_ossl = best_of(rounds, ossl)

    per = 1e6 / n
    print(f"== throughput: {n} chains (root -> intermediate -> leaf, EC P-256), best of {rounds}")
    print(f"  cryptography direct : {t_raw * per:8.1f} us/chain")
    print(f"  certkit.verify_chain: {t_ck * per:8.1f} us/chain   overhead {100 * (t_ck / t_raw - 1):+.1f} % "
          "(target <= +30 %)")
    if t_ossl is not None:
        print(f"  openssl verify      : {t_ossl * per:8.1f} us/chain   (one process for all {n} chains, "
              f"startup included)   certkit/openssl = {t_ck / t_ossl:.2f}")


def store_scale(big: int, small: int, rounds: int) -> None:
    print(f"== store scale: {small} vs {big} anchors")
    t0 = time.perf_counter()
    target = pki.make_root("Partner Root", org="Partner")
    inter = pki.make_intermediate(target, "Partner Issuing CA", org="Partner")
    leaf = pki.make_leaf(inter, ["mx.partner.example"])
    fillers = [pki.make_root(f"Filler Root {i}", org=f"Filler {i % 97}").cert for i in range(big - 1)]
    print(f"  generated {big} roots in {time.perf_counter() - t0:.1f} s")
    with tempfile.TemporaryDirectory() as d:
        paths = {}
        for size in (small, big):
            path = Path(d) / f"store{size}"
            t0 = time.perf_counter()
            TrustStore(path).add_many([target.cert, *fillers[: size - 1]])
            print(f"  built a {size}-anchor store in {time.perf_counter() - t0:.2f} s")
            paths[size] = path

        t_open = best_of(rounds, lambda: TrustStore(paths[big]).__len__() and None)
        print(f"  open {big}-anchor store (index + stat every file): {t_open * 1000:.0f} ms (target < 1000 ms)")
        t_load = best_of(max(1, rounds // 2), lambda: TrustStore(paths[big]).anchor_set(managed_only=True).store
                         and None)
        print(f"  first use of {big} anchors (read, hash-check, parse, build Store): {t_load * 1000:.0f} ms")

        per_size = {}
        for size in (small, big):
            anchors = TrustStore(paths[size]).anchor_set(managed_only=True)
            assert anchors.store is not None

            def run(anchors: AnchorSet = anchors) -> None:
                for _ in range(200):
                    if not verify_chain(leaf.cert, [inter.cert], anchors, name="mx.partner.example",
                                        at=pki.NOW).ok:
                        raise SystemExit("rejected")

            run()
            per_size[size] = best_of(rounds, run) / 200
            print(f"  verify against {size:>6} anchors: {per_size[size] * 1e6:8.1f} us/chain")
        print(f"  ratio {big}/{small}: {per_size[big] / per_size[small]:.2f}x (target <= 2x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chains", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--big", type=int, default=10_000)
    ap.add_argument("--small", type=int, default=150)
    args = ap.parse_args()
    import cryptography

    print(f"cryptography {cryptography.__version__}, Python {sys.version.split()[0]}")
    throughput(args.chains, args.rounds)
    store_scale(args.big, args.small, args.rounds)


if __name__ == "__main__":
    main()
