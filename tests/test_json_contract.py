"""The JSON contract (docs/json.md): every ``--json`` document against its shipped schema, real output only.

One module-scoped run makes a CA home, a trust store, Fabrikam's MX on loopback and its DNS, then runs every
command that has ``--json`` (through click's runner) and keeps the documents. The tests then check each
document against ``certkit/schemas/<command>.schema.json``, that every command with ``--json`` has a schema
and a document here, and that the contract's names and formats hold everywhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from certkit.cli import main
from certkit.core.dane import TlsaRecord
from certkit.core.formats import sha256_fingerprint
from certkit.core.jsonfacts import RFC3339_PATTERN
from certkit.core.keys import generate_key
from certkit.schemas import COMMON, DOCUMENTS, document, load, schema_files
from tests.dnsserver import DnsServer
from tests.sts_lab import StsLab
from tests.sts_lab import policy as sts_policy
from tests.test_preflight_world import World, pem, world

jsonschema = pytest.importorskip("jsonschema")
referencing = pytest.importorskip("referencing")

ENV = {"CERTKIT_CA_PASSPHRASE": "ca-secret", "CERTKIT_PFX_PASSWORD": "pfx-secret"}
#: Commands that report nothing a program would read, so they have no ``--json`` (docs/json.md says why).
NO_JSON = {
    "ca root": "prints the root certificate itself (PEM or DER)",
    "trust export": "prints or writes the anchors themselves (PEM, PKCS#7, DER files)",
    "lab serve": "a server: it runs until stopped and logs sessions",
    "postfix-policy": "a Postfix policy service: it speaks Postfix's policy protocol, not JSON",
    "lab demo": "a narrated walkthrough for people",
    "demo": "a narrated walkthrough for people",
    "completion": "prints the shell's completion script itself",
    "tlsrpt serve": "a server: it stores the reports it receives and logs requests",
    "watch serve": "a server: it serves the metrics (OpenMetrics) and logs each cycle",
    "watch check": "a Nagios plugin: its output is the plugin format (status line and perfdata)",
    "watch add": "changes the inventory; watch list --json shows it",
    "watch remove": "changes the inventory; watch list --json shows it",
}
#: Documents printed one per line by an option other than ``--json`` (``probe --jsonl FILE``, ``--json-lines``).
LINES = {"probe --jsonl"}
#: Keys that name a fact the contract names otherwise (thumbprint_sha1, fingerprint_sha256, dns_names ...).
FORBIDDEN_KEYS = {"sha1", "sha256", "sha1_thumbprint", "sha256_fingerprint", "thumbprint", "fingerprint", "sans",
                  "certs"}
#: Keys whose value is a time (RFC 3339, UTC, ``Z``, to the second) or null.
TIME_KEYS = re.compile(r"^(not_before|not_after|at|now|this_update|next_update|issued_at|revoked_at|added_at|"
                       r"root_not_after|issuer_not_after|next_step_at|next_at|seen_at|switched_at|retired_at|"
                       r"earliest_switch|projected_switch|earliest_retire)$")
UPPER_HEX = re.compile(r"^(?:[0-9A-F]{2})+$")


def cli(*args: str, codes: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """Run ``certkit ARGS``; its stdout as JSON."""
    result = CliRunner().invoke(main, list(args), env=ENV)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code in codes, (args, result.output)
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def _csr(path: Path) -> None:
    key = generate_key("ec-p256")
    req = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge.contoso.com")]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("edge.contoso.com")]), critical=False)
           .sign(key, hashes.SHA256()))
    path.write_bytes(req.public_bytes(serialization.Encoding.PEM))


def _ca_documents(tmp: Path, docs: dict[str, list[dict[str, Any]]]) -> Path:
    home, out = tmp / "home", tmp / "out"
    h = ("--home", str(home))

    def add(command: str, *args: str, codes: tuple[int, ...] = (0,)) -> dict[str, Any]:
        doc = cli(*command.split(), *args, "--json", codes=codes)
        docs.setdefault(command, []).append(doc)
        return doc

    add("ca init", *h, "--name", "Contoso Transport CA", "--key", "ec-p256", "--intermediate",
        "--crl-url", "http://127.0.0.1:1/contoso.crl")
    add("ca issue", "mail.contoso.com", "--accepted-domain", "contoso.com", "--san", "IP:192.0.2.25", "--key",
        "ec-p256", "--pfx", "--out", str(out), *h)
    (tmp / "names.txt").write_text("a.contoso.com\nb.contoso.com contoso.net\n")
    add("ca issue", "--from", str(tmp / "names.txt"), "--key", "ec-p256", "--out", str(tmp / "many"), *h)
    _csr(tmp / "edge.csr")
    signed = add("ca sign", str(tmp / "edge.csr"), "--out", str(tmp / "signed"), *h)
    add("ca renew", "a.contoso.com", "--out", str(tmp / "renewed"), *h)
    add("ca revoke", signed["certificate"]["serial"], "--reason", "superseded", *h)
    add("ca crl", "--out", str(tmp / "ca.crl"), *h)
    add("ca list", *h)
    add("ca list", "--revoked", *h)
    add("ca show", "mail.contoso.com", *h)
    add("ca status", *h, codes=(0, 1))
    add("selfsigned", "edge.fabrikam.com", "--out", str(tmp / "self"), "--key-passphrase-file", _secret(tmp))
    for f in (out / "mail.contoso.com.crt", out / "mail.contoso.com.chain.pem", out / "mail.contoso.com.pfx",
              tmp / "edge.csr", tmp / "ca.crl"):
        add("inspect", str(f), codes=(0, 1))
    return home


def _secret(tmp: Path) -> str:
    (tmp / "secret").write_text("key-secret\n")
    return str(tmp / "secret")


def _trust_documents(tmp: Path, w: World, docs: dict[str, list[dict[str, Any]]]) -> Path:
    store = tmp / "trust"
    s = ("--store", str(store))
    (tmp / "their-root.pem").write_bytes(pem(w.their_root.cert))
    (tmp / "our-root.pem").write_bytes(pem(w.our_root.cert))
    (tmp / "their-chain.pem").write_bytes(pem(w.their_leaf.cert, w.their_inter.cert))

    def add(command: str, *args: str, codes: tuple[int, ...] = (0,)) -> dict[str, Any]:
        doc = cli(*command.split(), *args, "--json", codes=codes)
        docs.setdefault(command, []).append(doc)
        return doc

    add("trust add", str(tmp / "their-root.pem"), "--label", "fabrikam", "--partner", "fabrikam.test", *s)
    add("trust add", str(tmp / "our-root.pem"), "--label", "contoso", *s)
    add("trust add", str(tmp / "our-root.pem"), *s)  # already trusted
    add("trust list", *s)
    add("trust show", "fabrikam", *s)
    add("trust verify", str(tmp / "their-chain.pem"), "--domain", "fabrikam.test", "--managed-only", *s)
    add("trust verify", str(tmp / "their-chain.pem"), "--domain", "contoso.test", "--managed-only", *s, codes=(1,))
    assert w.server is not None
    add("trust fetch", f"127.0.0.1:{w.server.port}", "--expect-sha256", sha256_fingerprint(w.their_inter.cert),
        "--label", "fetched", *s)
    add("trust remove", "fetched", *s)
    return store


def _net_documents(tmp: Path, w: World, home: Path, store: Path, docs: dict[str, list[dict[str, Any]]]) -> None:
    assert w.server is not None
    port = str(w.server.port)
    (tmp / "our.pem").write_bytes(pem(w.our_leaf.cert))
    (tmp / "our.key").write_bytes(w.our_leaf.key_pem)
    (tmp / "our-chain.pem").write_bytes(pem(w.our_inter.cert, w.our_root.cert))
    mine = ("--cert", str(tmp / "our.pem"), "--key", str(tmp / "our.key"))

    def add(command: str, *args: str, codes: tuple[int, ...] = (0,)) -> None:
        docs.setdefault(command, []).append(cli(*command.split(), *args, "--json", codes=codes))

    (tmp / "our-full.pem").write_bytes(pem(w.our_leaf.cert, w.our_inter.cert))
    add("probe", "fabrikam.test", "--nameserver", w.dns.address, "--port", port, "--client-cert",
        str(tmp / "our-full.pem"), "--client-key", str(tmp / "our.key"), "--store", str(store), "--managed-only",
        "--timeout", "3", codes=(0, 1))
    add("probe", "127.0.0.1", "--port", "1", "--timeout", "1", "--store", str(store), codes=(3,))
    # JSON Lines: each line is a document of its own (certkit/schemas/probe-line.schema.json).
    lines = CliRunner().invoke(main, ["probe", "fabrikam.test", "127.0.0.1:1", "--nameserver", w.dns.address,
                                      "--port", port, "--store", str(store), "--managed-only", "--timeout", "3",
                                      "--json-lines"], env=ENV)
    assert lines.exit_code in (0, 1), lines.output
    docs.setdefault("probe --jsonl", []).extend(json.loads(x) for x in lines.stdout.splitlines())
    assert len(docs["probe --jsonl"]) == 2
    add("preflight", "--partner", "fabrikam.test", "--our-domain", "contoso.test", *mine, "--chain",
        str(tmp / "our-chain.pem"), "--store", str(store), "--managed-only", "--nameserver", w.dns.address,
        "--port", port, "--timeout", "3", codes=(0, 1))
    add("lab send", "--from", "alice@contoso.test", "--to", "bob@fabrikam.test", "--via", f"127.0.0.1:{port}",
        *mine, "--chain", str(tmp / "our-chain.pem"), "--store", str(store), "--managed-only", "--timeout", "3",
        codes=(0, 1))
    out = tmp / "out"
    add("config exchange", "--partner", "fabrikam.test", "--cert-pfx", str(out / "mail.contoso.com.pfx"),
        "--partner-root", str(tmp / "their-root.pem"))
    add("config exchange", "--partner", "fabrikam.test", "--cert-pfx", str(out / "mail.contoso.com.pfx"),
        "--out", str(tmp / "exchange.ps1"))
    add("config exchange", "--partner", "fabrikam.test", "--target", "online")
    add("config postfix", "--partner", "fabrikam.test", "--store", str(store))
    add("config postfix", "--partner", "fabrikam.test", "--store", str(store), "--out", str(tmp / "postfix"),
        "--dane", "--cert", str(out / "mail.contoso.com.chain.pem"), "--key", str(out / "mail.contoso.com.key"))
    add("config partner-kit", "--out", str(tmp / "kit"), "--edge-fqdn", "mail.contoso.com", "--domain",
        "contoso.com", "--home", str(home), "--dane")
    add("dane tlsa", "mail.contoso.com", "--home", str(home))
    add("dane tlsa", "mx1.fabrikam.test", "--cert", str(tmp / "their-chain.pem"), "--ttl", "300")
    add("audit", str(tmp / "our-full.pem"), codes=(0, 1))
    add("audit", str(out / "mail.contoso.com.chain.pem"), "--within", "3650d", codes=(0, 1))
    add("tlsrpt read", str(Path(__file__).parent / "tlsrpt_corpus" / "reports"), "--home", str(home), codes=(1,))
    _rollover(home, docs)
    _watch_documents(home, store, port, w.dns.address, docs)


def _watch_documents(home: Path, store: Path, port: str, nameserver: str,
                     docs: dict[str, list[dict[str, Any]]]) -> None:
    h = ("--home", str(home))
    # the trust store's partner fabrikam.test, added with the loopback DNS server that knows it
    for args in (("fabrikam.test", "--nameserver", nameserver), (f"127.0.0.1:{port}", "--domain", "fabrikam.test")):
        added = CliRunner().invoke(main, ["watch", "add", *args, "--timeout", "3", *h], env=ENV)
        assert added.exit_code == 0, added.output
    docs.setdefault("watch list", []).append(cli("watch", "list", "--store", str(store), *h, "--json"))
    docs.setdefault("watch run", []).append(cli("watch", "run", "--once", "--store", str(store), "--managed-only",
                                                *h, "--json", codes=(0, 1)))
    docs.setdefault("watch report", []).append(cli("watch", "report", *h, "--json"))


def _rollover(home: Path, docs: dict[str, list[dict[str, Any]]]) -> None:
    host = "mail.contoso.com"
    zone: dict[str, list[str]] = {"TLSA": []}
    with DnsServer({f"_25._tcp.{host}": zone}, ttl=0) as dns:
        opts = (host, "--home", str(home), "--nameserver", dns.address)
        first = cli("dane", "rollover", "next", *opts, "--ttl", "0", "--margin", "0", "--json")
        docs.setdefault("dane rollover next", []).append(first)
        zone["TLSA"].extend(TlsaRecord.parse(line).text() for line in first["records"])
        for step in ("status", "switch", "retire", "status"):
            docs.setdefault(f"dane rollover {step}", []).append(cli("dane", "rollover", step, *opts, "--json"))


def _mta_sts_documents(tmp: Path, docs: dict[str, list[dict[str, Any]]]) -> None:
    for name, body, code in (("sts-ok", None, 0), ("sts-fail", sts_policy("enforce", mx=["mx9.contoso.test"]), 1),
                             ("sts-invalid", b"version: STSv1\n", 0)):
        (tmp / name).mkdir()
        with StsLab(tmp / name, policy_body=body) as lab:
            opts = lab.cli_options(tmp / name / "ca.pem")
            docs.setdefault("mta-sts check", []).append(cli("mta-sts", "check", "contoso.test", *opts, "--json",
                                                            codes=(code,)))
            probed = cli("probe", "contoso.test", *lab.probe_options(tmp / name), "--json", codes=(code,))
            assert probed["results"][0]["mta_sts"]["domain"] == "contoso.test"
            docs.setdefault("probe", []).append(probed)


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[dict[str, Any]]]]:
    """Every command's ``--json`` documents, from real runs."""
    tmp = tmp_path_factory.mktemp("contract")
    docs: dict[str, list[dict[str, Any]]] = {}
    with world() as w:
        w.serve()
        home = _ca_documents(tmp, docs)
        store = _trust_documents(tmp, w, docs)
        _net_documents(tmp, w, home, store, docs)
        _mta_sts_documents(tmp, docs)
        yield docs


def _registry() -> Any:
    resources = [(load(name)["$id"], referencing.Resource.from_contents(load(name))) for name in schema_files()]
    return referencing.Registry().with_resources(resources)


def _json_commands() -> dict[str, click.Command]:
    """Every leaf command of ``certkit`` by its path (``"ca list"``), through the lazy groups."""
    found: dict[str, click.Command] = {}

    def walk(cmd: click.Command, path: list[str]) -> None:
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None
                walk(sub, [*path, name])
        else:
            found[" ".join(path)] = cmd

    walk(main, [])
    return found


def test_every_command_that_reports_has_json_a_schema_and_a_document() -> None:
    commands = _json_commands()
    with_json = {name for name, cmd in commands.items() if any("--json" in getattr(p, "opts", ()) for p in cmd.params)}
    assert with_json | LINES == set(DOCUMENTS), "a --json flag without a document in certkit.schemas.DOCUMENTS, or back"
    assert set(commands) - with_json == set(NO_JSON), "a command without --json that is not listed in NO_JSON"
    shipped = set(schema_files())
    assert {d.schema for d in DOCUMENTS.values()} | {COMMON} == shipped


def test_every_schema_is_a_valid_schema_with_its_version() -> None:
    for name in schema_files():
        schema = load(name)
        jsonschema.validators.validator_for(schema).check_schema(schema)
        assert schema["$id"] == f"https://certkit.invalid/schemas/{name}"
    for doc in DOCUMENTS.values():
        assert load(doc.schema)["properties"]["schema_version"] == {"const": doc.version,
                                                                    "description": "Bumped only on a breaking "
                                                                                   "change (docs/json.md)."}


@pytest.mark.parametrize("command", sorted(DOCUMENTS))
def test_document_matches_its_schema(documents: dict[str, list[dict[str, Any]]], command: str) -> None:
    assert documents.get(command), f"no document of {command} was made: add a run to this module"
    schema = load(document(command).schema)
    validator = jsonschema.validators.validator_for(schema)(schema, registry=_registry())
    for doc in documents[command]:
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])
        assert next(iter(doc)) == "schema_version" and doc["schema_version"] == document(command).version


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield path, k, v
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")


def test_the_contract_names_and_formats_hold_everywhere(documents: dict[str, list[dict[str, Any]]]) -> None:
    for command, docs in documents.items():
        for doc in docs:
            for path, key, value in _walk(doc):
                where = f"{command}: {path}.{key}"
                assert key not in FORBIDDEN_KEYS, f"{where}: use the contract's name (docs/json.md)"
                if TIME_KEYS.match(key) and not (path.endswith("tls") or path.endswith("timings")):
                    assert value is None or RFC3339_PATTERN.match(value), f"{where}: {value!r} is not RFC 3339 Z"
                if key in ("thumbprint_sha1", "fingerprint_sha256", "serial") and value is not None:
                    assert UPPER_HEX.match(value), f"{where}: {value!r}"
                    assert len(value) == {"thumbprint_sha1": 40, "fingerprint_sha256": 64}.get(key, len(value))


def test_a_serial_is_printed_as_openssl_and_windows_print_it(documents: dict[str, list[dict[str, Any]]]) -> None:
    [doc] = documents["ca init"]
    root = doc["root"]
    cert_pem = Path(doc["home"], "root.crt").read_bytes()
    serial = x509.load_pem_x509_certificate(cert_pem).serial_number
    assert root["serial"] == f"{serial:X}".rjust(len(f"{serial:X}") + len(f"{serial:X}") % 2, "0")
    assert int(root["serial"], 16) == serial and len(root["serial"]) % 2 == 0


def test_the_same_certificate_has_the_same_facts_in_every_document(documents: dict[str, list[dict[str, Any]]]
                                                                    ) -> None:
    issued = documents["ca issue"][0]["certificates"][0]
    listed = next(c for c in documents["ca list"][0]["certificates"] if c["common_name"] == "mail.contoso.com")
    shown = documents["ca show"][0]
    inspected = documents["inspect"][0]["certificates"][0]
    for key in ("serial", "thumbprint_sha1", "fingerprint_sha256", "not_before", "not_after", "dns_names",
                "ip_addresses"):
        assert issued[key] == listed[key] == shown[key] == shown["certificate"][key] == inspected[key], key
    assert issued["dns_names"] == ["mail.contoso.com", "contoso.com"] and issued["ip_addresses"] == ["192.0.2.25"]
