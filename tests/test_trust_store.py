"""TrustStore: provenance, refusals, atomic locked updates, integrity, export."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7

from certkit.adapters import truststore as ts_mod
from certkit.adapters.roots import certifi_version, public_roots
from certkit.adapters.truststore import INDEX, TrustStore
from certkit.clock import FixedClock
from certkit.core.formats import load_certificates, sha256_fingerprint
from certkit.core.trust import Override
from certkit.core.verify import verify_chain
from certkit.errors import NotFoundError, PolicyError, StoreError
from tests import pki

NOW = pki.NOW


@pytest.fixture
def store(tmp_path: Path) -> TrustStore:
    return TrustStore(tmp_path / "trust", clock=FixedClock(NOW))


def test_add_records_provenance_and_survives_reopen(store: TrustStore, tmp_path: Path) -> None:
    root = pki.make_root("Fabrikam Root", org="Fabrikam")
    [res] = store.add_many([root.cert], label="fabrikam", partners=["Fabrikam.com"], sources=["/x/root.cer"])
    assert res.added and res.overridden == ()
    again = TrustStore(store.path)
    [entry] = again.entries()
    assert entry["label"] == "fabrikam" and entry["partners"] == ["fabrikam.com"]
    assert entry["source"] == "/x/root.cer" and entry["added_at"] == NOW.isoformat()
    assert entry["is_ca"] and not entry["pinned"]
    [anchor] = again.anchors()
    assert anchor.cert == root.cert and anchor.added_at == NOW and anchor.partners == ("fabrikam.com",)
    assert (store.path / f"{sha256_fingerprint(root.cert)}.pem").exists()


def test_adding_the_same_certificate_twice_is_harmless(store: TrustStore) -> None:
    root = pki.make_root()
    store.add(root.cert, label="first", partners=["a.example"])
    res = store.add(root.cert, label="second", partners=["b.example"])
    assert not res.added
    [entry] = store.entries()
    assert entry["label"] == "first" and entry["partners"] == ["a.example", "b.example"]


def test_non_ca_is_refused_unless_pinned(store: TrustStore) -> None:
    edge = pki.make_self_signed(["edge.fabrikam.com"])
    with pytest.raises(PolicyError, match=r"not a CA certificate.*--pin"):
        store.add(edge.cert)
    assert len(store) == 0 and not store.path.exists()
    res = store.add(edge.cert, pin=True)
    assert res.anchor.pinned and [r.override for r in res.overridden] == [Override.PIN]


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"not_after": NOW - dt.timedelta(days=1)}, "expired"),
    ({"key_type": "rsa", "bits": 1024}, "RSA 1024 bits"),
    ({"sha1": True}, "SHA-1"),
])
def test_expired_weak_or_sha1_anchor_is_refused_unless_forced(store: TrustStore, kwargs: dict[str, object],
                                                                reason: str) -> None:
    root = pki.make_root(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match=f"{reason}.*--force"):
        store.add(root.cert)
    assert len(TrustStore(store.path)) == 0
    res = store.add(root.cert, force=True)
    assert res.added and reason.split()[0] in " ".join(store.entries()[0]["forced"])


def test_one_refusal_writes_nothing(store: TrustStore) -> None:
    good, leaf = pki.make_root(), pki.make_leaf(pki.make_root(), ["mx.fabrikam.com"])
    with pytest.raises(PolicyError):
        store.add_many([good.cert, leaf.cert])
    assert len(TrustStore(store.path)) == 0


def _add_in_child(path: str, pems: list[bytes]) -> None:
    s = TrustStore(path)
    for pem in pems:
        s.add(x509.load_pem_x509_certificate(pem))


def test_two_processes_adding_at_once_both_succeed(tmp_path: Path) -> None:
    path = tmp_path / "trust"
    batches = [[pki.make_root(f"Root {p}-{i}").pem for i in range(6)] for p in range(4)]
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_add_in_child, args=(str(path), b)) for b in batches]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    s = TrustStore(path)
    assert len(s) == 24 and len(s.anchors()) == 24
    assert not s.stray


def test_remove_by_label_and_fingerprint_prefix(store: TrustStore) -> None:
    a, b = pki.make_root("A"), pki.make_root("B")
    store.add(a.cert, label="alpha")
    store.add(b.cert)
    assert store.remove("alpha")["subject"].startswith("CN=A")
    fp = sha256_fingerprint(b.cert)
    assert store.get(fp[:12].lower())["fingerprint_sha256"] == fp
    store.remove(fp[:12])
    assert len(TrustStore(store.path)) == 0
    assert not list(store.path.glob("*.pem"))
    with pytest.raises(NotFoundError, match="No anchor"):
        store.remove("alpha")


def test_same_size_edit_behind_certkits_back_is_refused_on_use(store: TrustStore) -> None:
    root = pki.make_root()
    store.add(root.cert)
    f = store.path / f"{sha256_fingerprint(root.cert)}.pem"
    data = bytearray(f.read_bytes())
    mid = len(data) // 2  # inside the base64 body: one character changed, same size
    data[mid] = ord("A") if data[mid] != ord("A") else ord("B")
    f.write_bytes(bytes(data))
    reopened = TrustStore(store.path)  # size unchanged: opening is cheap and does not notice yet
    with pytest.raises(StoreError, match="changed behind certkit's back"):
        reopened.anchors()


def test_changed_size_or_missing_file_is_reported_on_open(store: TrustStore) -> None:
    root = pki.make_root()
    store.add(root.cert)
    f = store.path / f"{sha256_fingerprint(root.cert)}.pem"
    f.write_bytes(f.read_bytes() + b"\n")
    with pytest.raises(StoreError, match="changed behind certkit's back"):
        TrustStore(store.path)
    f.unlink()
    with pytest.raises(StoreError, match="is missing"):
        TrustStore(store.path)
    # The damaged anchor can still be removed.
    TrustStore(store.path, check=False).remove(sha256_fingerprint(root.cert))
    assert len(TrustStore(store.path)) == 0


def test_folder_that_is_not_a_store_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(StoreError, match="is not a certkit trust store"):
        TrustStore(tmp_path)
    (tmp_path / INDEX).write_text('{"something": "else"}')
    with pytest.raises(StoreError, match="not a certkit trust store index"):
        TrustStore(tmp_path)
    (tmp_path / INDEX).write_text("{broken")
    with pytest.raises(StoreError, match="cannot be read"):
        TrustStore(tmp_path)
    with pytest.raises(StoreError, match="is a file"):
        TrustStore(tmp_path / "notes.txt")


def test_crash_before_index_write_leaves_old_store_intact(store: TrustStore, monkeypatch: pytest.MonkeyPatch) -> None:
    first = pki.make_root("First")
    store.add(first.cert)
    before = (store.path / INDEX).read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ts_mod, "atomic_write", boom)
    with pytest.raises(OSError, match="disk full"):
        store.add(pki.make_root("Second").cert)
    monkeypatch.undo()
    assert (store.path / INDEX).read_bytes() == before
    reopened = TrustStore(store.path)
    assert len(reopened) == 1 and len(reopened.stray) == 1  # the orphan PEM is not trusted


def test_opening_does_not_parse_certificates(store: TrustStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.add_many([pki.make_root(f"R{i}").cert for i in range(5)])

    def no_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed a PEM while opening")

    monkeypatch.setattr(ts_mod.x509, "load_pem_x509_certificate", no_parse)
    s = TrustStore(store.path)
    assert len(s.entries()) == 5 and s.find("R") == []


def test_anchor_set_adds_certifi_roots_unless_managed_only(store: TrustStore) -> None:
    root = pki.make_root()
    store.add(root.cert)
    assert len(store.anchor_set(managed_only=True)) == 1
    assert len(store.anchor_set()) == 1 + len(public_roots())
    assert certifi_version()


def test_verify_chain_takes_a_store(store: TrustStore) -> None:
    root = pki.make_root()
    inter = pki.make_intermediate(root)
    leaf = pki.make_leaf(inter, ["mx.fabrikam.com"])
    assert not verify_chain(leaf.cert, [inter.cert], store, at=NOW).ok
    store.add(root.cert, label="fab")
    r = verify_chain(leaf.cert, [inter.cert], store.managed(), domain="fabrikam.com", at=NOW)
    assert r.ok and r.anchor is not None and r.anchor.label == "fab"


@pytest.mark.filterwarnings("ignore:Parsed a serial number")  # one certifi root has serial 0
def test_export_formats_round_trip(store: TrustStore, tmp_path: Path) -> None:
    roots = [pki.make_root(f"Export {i}") for i in range(3)]
    store.add_many([r.cert for r in roots], label="exp")
    want = {sha256_fingerprint(r.cert) for r in roots}
    pem = store.export("pem", None)
    assert isinstance(pem, bytes)
    assert {sha256_fingerprint(c) for c in load_certificates(pem)} == want
    [p7] = store.export("p7b", tmp_path / "a.p7b")  # type: ignore[misc]
    assert {sha256_fingerprint(c) for c in pkcs7.load_der_pkcs7_certificates(p7.read_bytes())} == want
    files = store.export("der-dir", tmp_path / "cer")
    assert isinstance(files, list) and len(files) == 3
    assert {sha256_fingerprint(x509.load_der_x509_certificate(f.read_bytes())) for f in files} == want
    public = store.export("pem", None, include_public=True)
    assert isinstance(public, bytes) and len(load_certificates(public)) == 3 + len(public_roots())


def test_index_is_json_with_format_marker(store: TrustStore) -> None:
    store.add(pki.make_root().cert)
    doc = json.loads((store.path / INDEX).read_text())
    assert doc["format"] == "certkit-trust-store" and doc["version"] == 1
