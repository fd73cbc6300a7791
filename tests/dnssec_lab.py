"""A real DNSSEC chain on loopback: NSD serves signed zones, Unbound validates them.

The lab serves a parent zone (``test.`` for the default ``dane.test.``), always signed, whose key is
Unbound's trust anchor, and below it one or more child zones, each in a *variant*:

``secure``
    signed with its own key (algorithm 13, one combined signing key); the parent publishes its DS.
    Unbound answers with the AD flag.
``insecure``
    unsigned, delegated without DS: the parent's signed NSEC proves there is no DS, so Unbound
    answers without AD (and without SERVFAIL), as for any unsigned domain on the Internet.
``bogus``
    signed, DS published, but the signatures of the data (all RRSIGs but the DNSKEY's) are
    corrupted after signing, as an attacker's forged answer would be: Unbound answers SERVFAIL.
``wrong-key``
    signed with a key other than the one the parent's DS names: Unbound answers SERVFAIL.

Use::

    with DnssecLab("dane.test.") as lab:
        lab.add("mx.dane.test.", "A", "127.0.0.1")
        lab.add_tlsa("mx.dane.test", cert)          # 3 1 1 from certkit.core.dane.tlsa_for
        lab.reload()                                # re-sign, restart NSD, flush Unbound's cache
        run(["certkit", ..., "--nameserver", lab.resolver])   # "127.0.0.1:PORT"

Several child zones in one lab: ``DnssecLab(zones={"dane.test.": "secure", "plain.test.": "insecure"})``
(all must share one parent). A name added without a trailing dot is relative to the first zone.
Records may be added before the lab starts (then no reload is needed) or after (then call reload()).

For programs that only use the system resolver (Postfix's posttls-finger reads /etc/resolv.conf):
``DnssecLab(..., system_resolver=True)`` (root) puts Unbound on ``127.53.x.y:53``, and
``lab.run_with_system_resolver(["posttls-finger", ...])`` runs the program in a private mount
namespace whose /etc/resolv.conf names that resolver with ``options trust-ad``. The network is
not unshared, so the program still reaches the test's own servers on 127.0.0.1.

The module-scoped fixture :func:`dnssec_lab` gives one running lab with ``dane.test.`` (secure),
``insecure.test.`` and ``bogus.test.``; tests that add records should use names of their own.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from cryptography import x509

from certkit.core.dane import TlsaRecord, owner_name, tlsa_for
from tests.tools import require_tool, unavailable

__all__ = ["DEFAULT_ZONES", "VARIANTS", "DnssecLab", "dnssec_lab", "require_dnssec_tools"]

VARIANTS = ("secure", "insecure", "bogus", "wrong-key")

#: The zones of the :func:`dnssec_lab` fixture.
DEFAULT_ZONES = {"dane.test.": "secure", "insecure.test.": "insecure", "bogus.test.": "bogus"}

#: Top-level names that Unbound answers itself unless told ``nodefault`` (RFC 6761 and friends).
_UNBOUND_DEFAULT_ZONES = ("test.", "invalid.", "onion.", "localhost.", "home.arpa.")

_TOOLS = ("nsd", "unbound", "unbound-control", "ldns-keygen", "ldns-signzone", "ldns-key2ds")


def require_dnssec_tools() -> dict[str, str]:
    """Paths of NSD, Unbound and the ldns tools; skip the test when one is missing (fail under ``CI=true``)."""
    return {name: require_tool(name) for name in _TOOLS}


def _absolute(name: str) -> str:
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


def _free_port() -> int:
    """A port free on 127.0.0.1 for both UDP and TCP (the daemon binds it right after)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free loopback port for both UDP and TCP")


def _free_port_53() -> str:
    """A loopback address ``127.53.x.y`` whose port 53 is free for UDP and TCP (root only)."""
    for _ in range(50):
        host = f"127.53.{random.randrange(256)}.{random.randrange(1, 255)}"
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
                    socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                udp.bind((host, 53))
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((host, 53))
        except OSError:
            continue
        return host
    raise RuntimeError("no loopback address with a free port 53")


class DnssecLab:
    """NSD (authoritative, signed zones) and Unbound (validating resolver) on loopback; a context manager.

    ``domain``/``variant`` give one child zone; ``zones`` (name -> variant) gives several instead.
    ``lab.resolver`` is Unbound's ``"127.0.0.1:PORT"``; ``lab.authoritative`` is NSD's.
    """

    def __init__(self, domain: str = "dane.test.", variant: str = "secure", *,
                 zones: Mapping[str, str] | None = None, ttl: int = 60,
                 resolver_port: int | None = None, workdir: str | os.PathLike[str] | None = None,
                 system_resolver: bool = False) -> None:
        self.tools = require_dnssec_tools()
        self.system_resolver = system_resolver
        if system_resolver:
            self.tools["unshare"] = require_tool("unshare")
            if os.geteuid() != 0:
                unavailable("a system-resolver lab needs root (port 53, mounts)")
        wanted = dict(zones) if zones else {domain: variant}
        self.zones: dict[str, str] = {}
        for name, var in wanted.items():
            if var not in VARIANTS:
                raise ValueError(f"unknown variant {var!r} for {name}: one of {', '.join(VARIANTS)}")
            self.zones[_absolute(name)] = var
        self.domain = next(iter(self.zones))
        parents = {z.split(".", 1)[1] for z in self.zones}
        if len(parents) != 1 or "" in parents or "." in parents:
            raise ValueError(f"the lab's zones need one common parent below the root: {sorted(self.zones)}")
        self.parent: str = parents.pop()
        self.ttl = ttl
        self.records: list[tuple[str, int, str, str]] = []
        self._own_dir = workdir is None
        self.dir = Path(tempfile.mkdtemp(prefix="dnssec-lab-") if workdir is None else workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.nsd_port = 0
        self.resolver_host = "127.0.0.1"
        self.resolver_port = resolver_port or 0
        self._fixed_resolver_port = resolver_port is not None
        self._serial = int(time.time())
        self._nsd: subprocess.Popen[bytes] | None = None
        self._unbound: subprocess.Popen[bytes] | None = None
        self._keys: dict[str, str] = {}   # zone -> key file base name (without .key/.private)
        self._started = False

    # -- records ---------------------------------------------------------------------------------

    def _qualify(self, name: str) -> str:
        name = name.strip().lower()
        if name in ("@", ""):
            return self.domain
        return name if name.endswith(".") else f"{name}.{self.domain}"

    def zone_of(self, name: str) -> str:
        """The lab zone that holds ``name`` (the longest zone suffix; the parent zone otherwise)."""
        name = self._qualify(name)
        for zone in sorted(self.zones, key=len, reverse=True):
            if name == zone or name.endswith("." + zone):
                return zone
        if name == self.parent or name.endswith("." + self.parent):
            return self.parent
        raise ValueError(f"{name} is not in the lab's zones ({', '.join(self.zones)})")

    def add(self, name: str, rtype: str, data: str, *, ttl: int | None = None) -> None:
        """Add one record in presentation format: ``add("_25._tcp.mx.dane.test.", "TLSA", "3 1 1 ab..")``.

        Takes effect at start, or at :meth:`reload` on a running lab.
        """
        owner = self._qualify(name)
        self.zone_of(owner)
        self.records.append((owner, self.ttl if ttl is None else ttl, rtype.upper(), data.strip()))

    def remove(self, name: str, rtype: str | None = None) -> int:
        """Drop the records of ``name`` (of type ``rtype`` only, if given); returns how many. Then reload()."""
        owner = self._qualify(name)
        keep = [r for r in self.records if not (r[0] == owner and (rtype is None or r[2] == rtype.upper()))]
        dropped = len(self.records) - len(keep)
        self.records = keep
        return dropped

    def add_tlsa(self, host: str, cert: x509.Certificate, usage: int = 3, selector: int = 1,
                 matching: int = 1, *, port: int = 25) -> TlsaRecord:
        """Add the TLSA record of ``cert`` for ``host``'s SMTP port (default DANE-EE 3 1 1); returns it."""
        record = tlsa_for(cert, usage, selector, matching)
        self.add(self.tlsa_owner(host, port), "TLSA", record.text())
        return record

    @staticmethod
    def tlsa_owner(host: str, port: int = 25) -> str:
        """``_25._tcp.host.`` for ``host`` (with or without its trailing dot)."""
        return owner_name(host.rstrip("."), port)

    def set_variant(self, zone: str, variant: str) -> None:
        """Change a child zone's variant (e.g. to make it bogus); takes effect at :meth:`reload`."""
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}: one of {', '.join(VARIANTS)}")
        zone = _absolute(zone)
        if zone not in self.zones:
            raise ValueError(f"{zone} is not a child zone of the lab")
        self.zones[zone] = variant

    # -- addresses -------------------------------------------------------------------------------

    @property
    def resolver(self) -> str:
        """The validating resolver as ``"127.0.0.1:PORT"`` (certkit's ``--nameserver`` form)."""
        return f"{self.resolver_host}:{self.resolver_port}"

    @property
    def authoritative(self) -> str:
        """NSD as ``"127.0.0.1:PORT"`` (answers without validation)."""
        return f"127.0.0.1:{self.nsd_port}"

    def query(self, name: str, rtype: str = "A", *, server: str | None = None,
              timeout: float = 2.0) -> dns.message.Message:
        """One query with DO and AD set (to the resolver unless ``server``), over UDP with TCP on truncation."""
        host, _, port = (server or self.resolver).rpartition(":")
        msg = dns.message.make_query(self._qualify(name), rtype, want_dnssec=True)
        msg.flags |= dns.flags.AD | dns.flags.RD
        answer, _tcp = dns.query.udp_with_fallback(msg, host, timeout=timeout, port=int(port))
        return answer

    # -- files -----------------------------------------------------------------------------------

    def _run(self, *args: str) -> str:
        done = subprocess.run(list(args), cwd=self.dir, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def _key(self, zone: str) -> str:
        if zone not in self._keys:
            out = self._run(self.tools["ldns-keygen"], "-a", "ECDSAP256SHA256", "-k", zone)
            self._keys[zone] = out.strip().splitlines()[-1]
        return self._keys[zone]

    def _ds(self, zone: str, key_zone: str | None = None) -> list[str]:
        """The DS lines for ``zone``'s key (or for a decoy key, for ``wrong-key``)."""
        base = self._key(key_zone or zone)
        out = self._run(self.tools["ldns-key2ds"], "-n", "-2", f"{base}.key")
        lines = [line for line in out.splitlines() if "\tDS\t" in line or " DS " in line]
        if key_zone:   # a decoy key generated under a label of its own: give its DS the zone's owner
            lines = [re.sub(r"^\S+", zone, line) for line in lines]
        return lines

    def _zone_text(self, zone: str) -> str:
        lines = [f"$ORIGIN {zone}", f"$TTL {self.ttl}",
                 f"@ IN SOA ns.{self.parent} hostmaster.{zone} {self._serial} 3600 600 86400 {self.ttl}",
                 f"@ IN NS ns.{self.parent}"]
        if zone == self.parent:
            lines.append(f"ns.{self.parent} IN A 127.0.0.1")
            for child, variant in self.zones.items():
                lines.append(f"{child} IN NS ns.{self.parent}")
                if variant in ("secure", "bogus"):
                    lines += self._ds(child)
                elif variant == "wrong-key":
                    lines += self._ds(child, key_zone="decoy." + child)
        for owner, ttl, rtype, data in self.records:
            if self.zone_of(owner) == zone:
                lines.append(f"{owner} {ttl} IN {rtype} {data}")
        return "\n".join(lines) + "\n"

    def _write_zone(self, zone: str) -> str:
        """Write (and sign, per variant) ``zone``; returns the file NSD serves."""
        plain = self.dir / f"{zone}zone"
        plain.write_text(self._zone_text(zone))
        variant = "secure" if zone == self.parent else self.zones[zone]
        if variant == "insecure":
            return plain.name
        signed = self.dir / f"{zone}zone.signed"
        self._run(self.tools["ldns-signzone"], "-f", signed.name, plain.name, self._key(zone))
        if variant == "bogus":
            signed.write_text(_corrupt_signatures(signed.read_text()))
        return signed.name

    def _write_configs(self) -> None:
        self._serial += 1
        zone_files = {zone: self._write_zone(zone) for zone in (self.parent, *self.zones)}
        d = self.dir
        nsd = [
            "server:",
            f"    ip-address: 127.0.0.1@{self.nsd_port}",
            f"    port: {self.nsd_port}",
            "    do-ip6: no",
            '    username: ""',
            '    chroot: ""',
            '    database: ""',
            f'    zonesdir: "{d}"',
            f'    zonelistfile: "{d}/zone.list"',
            f'    xfrdfile: "{d}/xfrd.state"',
            f'    xfrdir: "{d}"',
            f'    pidfile: "{d}/nsd.pid"',
            f'    logfile: "{d}/nsd.log"',
            "    server-count: 1",
            "    verbosity: 1",
            "remote-control:",
            "    control-enable: no",
        ]
        for zone, path in zone_files.items():
            nsd += ["zone:", f'    name: "{zone}"', f'    zonefile: "{path}"']
        (d / "nsd.conf").write_text("\n".join(nsd) + "\n")
        # Unbound trusts the parent's key; everything below is proved (or disproved) from there.
        (d / "anchor.key").write_text("\n".join(self._ds(self.parent)) + "\n")
        top = "." + self.parent.rstrip(".").rsplit(".", 1)[-1] + "."
        nodefault = [f'    local-zone: "{z}" nodefault' for z in _UNBOUND_DEFAULT_ZONES
                     if ("." + self.parent).endswith("." + z) or top == "." + z]
        unbound = [
            "server:",
            f"    interface: {self.resolver_host}",
            f"    port: {self.resolver_port}",
            "    do-ip6: no",
            "    do-not-query-localhost: no",
            '    chroot: ""',
            '    username: ""',
            f'    directory: "{d}"',
            f'    pidfile: "{d}/unbound.pid"',
            "    use-syslog: no",
            '    logfile: ""',
            "    verbosity: 1",
            "    val-log-level: 2",
            '    module-config: "validator iterator"',
            f'    trust-anchor-file: "{d}/anchor.key"',
            "    num-threads: 1",
            "    so-reuseport: no",
            "    qname-minimisation: no",
            "    aggressive-nsec: no",
            "    access-control: 127.0.0.0/8 allow",
            *nodefault,
            "stub-zone:",
            f'    name: "{self.parent}"',
            f"    stub-addr: 127.0.0.1@{self.nsd_port}",
            "remote-control:",
            "    control-enable: yes",
            f'    control-interface: "{d}/unbound.ctl"',
            "    control-use-cert: no",
        ]
        (d / "unbound.conf").write_text("\n".join(unbound) + "\n")

    # -- processes -------------------------------------------------------------------------------

    def start(self) -> DnssecLab:
        """Write, sign and serve the zones; start Unbound; return once both answer."""
        if self._started:
            return self
        self._started = True
        try:
            self.nsd_port = _free_port()
            if self.system_resolver:
                self.resolver_host, self.resolver_port = _free_port_53(), 53
                self.resolv_conf.write_text(f"nameserver {self.resolver_host}\noptions trust-ad\n")
            elif not self._fixed_resolver_port:
                self.resolver_port = _free_port()
            self._write_configs()
            self._start_nsd()
            self._start_unbound()
        except BaseException:
            self.close()
            raise
        return self

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.dir / f"{name}.out", "ab")  # noqa: SIM115 - the child owns it
        try:
            return subprocess.Popen(args, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()

    def _start_nsd(self) -> None:
        self._nsd = self._spawn("nsd", [self.tools["nsd"], "-d", "-c", str(self.dir / "nsd.conf")])
        self._wait(self._nsd, "nsd", lambda: self._nsd_ready())

    def _nsd_ready(self) -> bool:
        for zone in (self.parent, *self.zones):
            answer = self.query(zone, "SOA", server=self.authoritative, timeout=0.3)
            soa = answer.get_rrset(answer.answer, dns.name.from_text(zone), 1, dns.rdatatype.SOA)
            if soa is None or soa[0].serial != self._serial:  # type: ignore[attr-defined]
                return False
        return True

    def _start_unbound(self) -> None:
        self._unbound = self._spawn("unbound", [self.tools["unbound"], "-d", "-c", str(self.dir / "unbound.conf")])
        self._wait(self._unbound, "unbound",
                   lambda: self.query(self.parent, "SOA", timeout=0.3).rcode() == dns.rcode.NOERROR)

    def _wait(self, proc: subprocess.Popen[bytes], name: str, ready: object, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {self.log(name)}")
            try:
                if ready():  # type: ignore[operator]
                    return
            except (OSError, dns.exception.DNSException):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not answer within {timeout} s: {self.log(name)}")

    @property
    def resolv_conf(self) -> Path:
        """A resolv.conf naming the lab's resolver, with ``options trust-ad`` (only for ``system_resolver``)."""
        return self.dir / "resolv.conf"

    def system_resolver_command(self, command: Sequence[str]) -> list[str]:
        """``command`` wrapped to run with the lab's resolver as the system resolver (``system_resolver=True``).

        It runs in a mount namespace of its own (``unshare --mount``) where :attr:`resolv_conf` is
        bind-mounted on ``/etc/resolv.conf``; the network stays shared, so the command reaches the
        test's servers on 127.0.0.1 as usual, and glibc's stub (Postfix's posttls-finger, getent)
        asks Unbound on ``127.53.x.y:53`` and, with ``trust-ad``, keeps its AD flag.
        """
        if not self.system_resolver:
            raise RuntimeError("system_resolver_command needs DnssecLab(..., system_resolver=True)")
        script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
        return [self.tools["unshare"], "--mount", "--propagation", "private", "sh", "-c", script,
                str(self.resolv_conf), *command]

    def run_with_system_resolver(self, command: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run ``command`` (see :meth:`system_resolver_command`); ``kwargs`` go to :func:`subprocess.run`."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 60)
        return subprocess.run(self.system_resolver_command(command), check=False, **kwargs)

    def log(self, name: str = "unbound") -> str:
        """The tail of a daemon's output (``"nsd"`` or ``"unbound"``), for failure messages."""
        text = ""
        for path in (self.dir / f"{name}.out", self.dir / f"{name}.log"):
            if path.exists():
                text += path.read_text(errors="replace")
        return text[-3000:]

    def reload(self) -> None:
        """Apply the records and variants: re-sign, restart NSD, and flush Unbound's caches."""
        if not self._started:
            self.start()
            return
        self._write_configs()
        _stop(self._nsd)
        self._start_nsd()
        self.flush()

    def flush(self) -> None:
        """Empty Unbound's caches (answers, keys, bogus and negative entries)."""
        assert self._unbound is not None
        self._run(self.tools["unbound-control"], "-c", str(self.dir / "unbound.conf"), "reload")
        self._wait(self._unbound, "unbound",
                   lambda: self.query(self.parent, "SOA", timeout=0.3).rcode() == dns.rcode.NOERROR)

    def close(self) -> None:
        """Stop both daemons and remove the lab's folder (when the lab made it)."""
        _stop(self._unbound)
        _stop(self._nsd)
        self._unbound = self._nsd = None
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> DnssecLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _corrupt_signatures(signed: str) -> str:
    """Flip one character of every RRSIG's signature except those over the DNSKEY set."""
    out = []
    for line in signed.splitlines():
        fields = line.split()
        if len(fields) > 5 and "RRSIG" in fields[:4] and fields[fields.index("RRSIG") + 1] != "DNSKEY":
            sig = fields[-1]
            swapped = _B64[(_B64.index(sig[4]) + 1) % 64]
            fields[-1] = sig[:4] + swapped + sig[5:]
            line = "\t".join(fields)
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def dnssec_lab() -> Iterator[DnssecLab]:
    """One running lab per test module: ``dane.test.`` (secure), ``insecure.test.``, ``bogus.test.``."""
    with DnssecLab(zones=DEFAULT_ZONES) as lab:
        yield lab
