"""certkit config postfix --dane and config partner-kit --dane.

* Outbound: the generated main.cf with --dane is parsed by real Postfix (``postconf -c DIR -n``) with no
  warning, and carries ``smtp_tls_security_level = dane``, ``smtp_dns_support_level = dnssec`` and
  ``smtp_host_lookup = dns``.
* Inbound: ``tlsa.zone`` holds the records of our MX, the same as ``certkit dane tlsa HOST --cert`` and
  :func:`certkit.core.dane.tlsa_for`, and loads as a zone (dnspython).
* Without --dane nothing changed: the golden files of tests/test_config.py (written before DANE existed)
  still match, and no file or line is added.
* The partner kit lists the same records, from --cert FILE or from the CA home.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import time
from pathlib import Path

import dns.rdatatype
import dns.zone
import pytest
from click.testing import CliRunner

from certkit.adapters.truststore import TrustStore
from certkit.cli import main
from certkit.configgen import our_tlsa, partner_kit, postfix_config
from certkit.core.dane import TlsaRecord, Usage, owner_name, tlsa_for, zone_line
from certkit.errors import InputError
from tests.pki import make_intermediate, make_leaf, make_root
from tests.test_config import PARTNER_ROOT
from tests.test_config import ROOT as GOLDEN_ROOT
from tests.test_dane import ENV, MX, _home
from tests.test_preflight_world import check_golden, pem
from tests.tools import require_tool

ROOT = make_root("Contoso Root", org="Contoso")
INTER = make_intermediate(ROOT, "Contoso Issuing CA", org="Contoso")
LEAF = make_leaf(INTER, [MX, "contoso.com"])
DANE_LINES = ("smtp_tls_security_level = dane", "smtp_dns_support_level = dnssec", "smtp_host_lookup = dns")


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=ENV)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    store = tmp_path / "trust"
    TrustStore(store).add(PARTNER_ROOT.cert, label="fabrikam", partners=["fabrikam.com"])
    chain = tmp_path / "edge.pem"
    chain.write_bytes(pem(LEAF.cert) + pem(INTER.cert))
    (tmp_path / "edge.key").write_text("not read\n")
    (tmp_path / "root.pem").write_bytes(pem(ROOT.cert))
    return {"store": store, "chain": chain, "key": tmp_path / "edge.key", "root": tmp_path / "root.pem"}


def postfix_args(files: dict[str, Path], *more: str) -> list[str]:
    return ["config", "postfix", "--partner", "fabrikam.com", "--store", str(files["store"]),
            "--cert", str(files["chain"]), "--key", str(files["key"]), *more]


def settings(main_cf: str) -> dict[str, str]:
    return dict(line.split(" = ", 1) for line in main_cf.splitlines() if " = " in line and not line.startswith("#"))


# --- outbound: real Postfix parses the settings ----------------------------------------------------------


def _postconf(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("postconf"), "-c", str(folder), "-n"], capture_output=True, text=True,
                          timeout=30, check=False)


def test_main_cf_with_dane_passes_postconf(tmp_path: Path, files: dict[str, Path]) -> None:
    out = tmp_path / "pf"
    code, _, err = invoke(*postfix_args(files, "--dane", "--out", str(out)))
    assert code == 0, err
    # issue #12: --out also writes inbound enforcement (main.cf.inbound, master.cf.inbound, certkit-partners.json)
    assert sorted(p.name for p in out.iterdir()) == [
        "certkit-ca.pem", "certkit-partners.json", "main.cf.certkit", "main.cf.inbound", "master.cf.certkit",
        "master.cf.inbound", "tls_policy", "tlsa.zone"]
    etc = tmp_path / "etc"
    etc.mkdir()
    # compatibility_level: without it every Postfix command warns about the defaults, whatever else is set.
    (etc / "main.cf").write_text((out / "main.cf.certkit").read_text() + "compatibility_level = 3.6\n")
    shutil.copy(out / "master.cf.certkit", etc / "master.cf")
    done = _postconf(etc)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    got = settings(done.stdout)
    assert got["smtp_tls_security_level"] == "dane"
    assert got["smtp_dns_support_level"] == "dnssec"
    assert got["smtp_host_lookup"] == "dns"
    # the Domain Security settings are all still there
    assert got["smtp_tls_policy_maps"] == "texthash:/etc/postfix/tls_policy"
    assert got["smtpd_tls_cert_file"] == got["smtp_tls_cert_file"] == str(files["chain"].resolve())
    assert (out / "tls_policy").read_text().splitlines()[-1] == "fabrikam.com secure match=fabrikam.com:.fabrikam.com"
    text = (out / "main.cf.certkit").read_text()
    assert "DNSSEC-validating resolver" in text and "options trust-ad" in text and "glibc >= 2.31" in text
    assert f"tlsa.zone ({owner_name(MX)})" in text
    # The check itself works: a parameter Postfix does not know is reported.
    with (etc / "main.cf").open("a") as f:
        f.write("smtp_tls_securty_level = dane\n")
    assert "unused parameter" in _postconf(etc).stderr


def test_dane_needs_the_certificate(files: dict[str, Path]) -> None:
    code, out, err = invoke("config", "postfix", "--partner", "fabrikam.com", "--store", str(files["store"]),
                            "--dane")
    assert code == 2 and "--dane needs --cert" in err and not out
    code, out, err = invoke(*postfix_args(files, "--mx", MX))
    assert code == 2 and "--mx is for --dane" in err and not out
    with pytest.raises(InputError):
        postfix_config("fabrikam.com", ca_bundle=[PARTNER_ROOT.cert], dane=True)


# --- without --dane: nothing changed -----------------------------------------------------------------------


def test_without_dane_the_output_is_unchanged(files: dict[str, Path], tmp_path: Path) -> None:
    # The golden files were written before --dane existed; the same inputs as tests/test_config.py.
    kwargs = {"ca_bundle": [PARTNER_ROOT.cert, GOLDEN_ROOT.cert], "cert_file": "/etc/ssl/edge.pem",
              "key_file": "/etc/ssl/edge.key"}
    plain = postfix_config("Fabrikam.com", **kwargs)  # type: ignore[arg-type]
    assert plain == postfix_config("Fabrikam.com", dane=False, **kwargs)  # type: ignore[arg-type]
    assert plain.tlsa_zone is None and "tlsa.zone" not in plain.files
    check_golden("postfix-main.cf", plain.main_cf)
    check_golden("postfix-tls_policy", plain.tls_policy)
    check_golden("postfix-master.cf", plain.master_cf)
    kit = partner_kit(GOLDEN_ROOT.cert, edge_fqdn="edge.contoso.com", domains=["contoso.com", "contoso.net"],
                      crl_url="http://crl.contoso.com/contoso.crl", organisation="Contoso")
    check_golden("partner-kit.txt", kit["README.txt"].decode())
    # The command: the same text as before, and DANE changes only the lines it is about.
    code, before, _ = invoke(*postfix_args(files))
    code2, after, _ = invoke(*postfix_args(files, "--dane"))
    assert code == code2 == 0
    assert "dane" not in before.replace(str(files["chain"].parent), "").lower() and "TLSA" not in before
    assert "smtp_tls_security_level = may" in before.splitlines()
    removed = set(before.splitlines()) - set(after.splitlines())
    assert removed == {"smtp_tls_security_level = may",
                       '# Opportunistic TLS for everybody else; the policy table makes fabrikam.com "secure".'}
    assert all(line in after.splitlines() for line in DANE_LINES)


# --- inbound: the TLSA records of our MX -----------------------------------------------------------------


def _zone_records(text: str) -> list[tuple[str, TlsaRecord]]:
    return [(line.split()[0], TlsaRecord.parse(line)) for line in text.splitlines()
            if line and not line.startswith(";")]


def test_tlsa_zone_has_the_records_of_our_mx(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "pf"
    code, _, err = invoke(*postfix_args(files, "--dane", "--out", str(out)))
    assert code == 0, err
    zone = (out / "tlsa.zone").read_text()
    # the owner is the certificate's CN (our Edge FQDN), port 25; 3 1 1 for our key, 2 1 1 for the CA we send
    assert _zone_records(zone) == [(owner_name(MX), tlsa_for(LEAF.cert, Usage.DANE_EE)),
                                   (owner_name(MX), tlsa_for(INTER.cert, Usage.DANE_TA))]
    # the same lines as certkit dane tlsa prints for the same chain
    code, tlsa_out, _ = invoke("dane", "tlsa", MX, "--cert", str(files["chain"]))
    assert code == 0
    assert [line for line in zone.splitlines() if not line.startswith(";")] == tlsa_out.splitlines()
    # valid zone-file syntax
    parsed = dns.zone.from_text("$TTL 3600\n" + zone, origin="contoso.com.", relativize=False, check_origin=False)
    rdatas = parsed.find_rdataset(owner_name(MX), dns.rdatatype.TLSA)
    assert {(r.usage, r.selector, r.mtype, r.cert) for r in rdatas} == {
        (r.usage, r.selector, r.matching_type, r.data) for _, r in _zone_records(zone)}
    # the printed form ends with the same fragment
    code, printed, _ = invoke(*postfix_args(files, "--dane"))
    assert code == 0 and printed.endswith("\n" + zone)
    # --mx names another owner; the records stay the same
    code, printed, _ = invoke(*postfix_args(files, "--dane", "--mx", "MX2.Contoso.com."))
    assert code == 0 and f"{owner_name('mx2.contoso.com')} IN TLSA 3 1 1 " in printed


def test_tlsa_zone_without_the_issuer_and_with_a_cn_that_is_no_host() -> None:
    alone = postfix_config("fabrikam.com", ca_bundle=[PARTNER_ROOT.cert], dane=True, dane_chain=[LEAF.cert])
    assert alone.tlsa_zone is not None
    assert _zone_records(alone.tlsa_zone) == [(owner_name(MX), tlsa_for(LEAF.cert, Usage.DANE_EE))]
    assert "no 2 1 1 record" in alone.tlsa_zone
    odd = make_leaf(INTER, [MX], cn="Contoso Edge")
    with pytest.raises(InputError, match="--mx"):
        postfix_config("fabrikam.com", ca_bundle=[PARTNER_ROOT.cert], dane=True, dane_chain=[odd.cert])
    named = postfix_config("fabrikam.com", ca_bundle=[PARTNER_ROOT.cert], dane=True, dane_chain=[odd.cert], mx=MX)
    assert named.tlsa_zone is not None and zone_line(tlsa_for(odd.cert, 3), MX) in named.tlsa_zone


# --- the partner kit -----------------------------------------------------------------------------------------


def test_partner_kit_lists_the_records(files: dict[str, Path], tmp_path: Path) -> None:
    kit = partner_kit(ROOT.cert, edge_fqdn=MX, domains=["contoso.com"], crl_url=None,
                      dane_chain=[LEAF.cert, INTER.cert])["README.txt"].decode()
    for record, _ in our_tlsa([LEAF.cert, INTER.cert]):
        assert f"  {zone_line(record, MX)}\n" in kit
    assert f"dig +dnssec TLSA {owner_name(MX)}" in kit and "DANE authenticates servers only" in kit
    # --cert FILE: the lines dane tlsa --cert prints
    code, _, err = invoke("config", "partner-kit", "--out", str(tmp_path / "kit1"), "--edge-fqdn", MX,
                          "--domain", "contoso.com", "--root", str(files["root"]), "--dane",
                          "--cert", str(files["chain"]))
    assert code == 0, err
    readme = (tmp_path / "kit1/README.txt").read_text()
    _, expected, _ = invoke("dane", "tlsa", MX, "--cert", str(files["chain"]))
    assert all(f"  {line}\n" in readme for line in expected.splitlines()) and len(expected.splitlines()) == 2
    # --home: the newest certificate for the FQDN in the CA home, as dane tlsa --home picks it
    home, _ = _home(tmp_path / "a", intermediate=True)
    code, _, err = invoke("config", "partner-kit", "--home", str(home), "--out", str(tmp_path / "kit2"),
                          "--edge-fqdn", MX, "--domain", "contoso.com", "--dane")
    assert code == 0, err
    readme = (tmp_path / "kit2/README.txt").read_text()
    _, expected, _ = invoke("dane", "tlsa", MX, "--home", str(home))
    assert all(f"  {line}\n" in readme for line in expected.splitlines()) and len(expected.splitlines()) == 2
    # A CA without an intermediate: its chain files do not carry the root, so no 2 1 1 record that cannot match.
    home, _ = _home(tmp_path / "b", intermediate=False)
    code, _, err = invoke("config", "partner-kit", "--home", str(home), "--out", str(tmp_path / "kit3"),
                          "--edge-fqdn", MX, "--domain", "contoso.com", "--dane")
    assert code == 0, err
    readme = (tmp_path / "kit3/README.txt").read_text()
    _, expected, _ = invoke("dane", "tlsa", MX, "--home", str(home), "--usage", "ee")
    assert f"  {expected.strip()}\n" in readme and " IN TLSA 2 1 1 " not in readme
    # --cert without --dane is misuse; without --dane the kit has no DANE section
    code, _, err = invoke("config", "partner-kit", "--home", str(home), "--out", str(tmp_path / "kit4"),
                          "--edge-fqdn", MX, "--domain", "contoso.com", "--cert", str(files["chain"]))
    assert code == 2 and "--cert is read only with --dane" in err
    code, _, _ = invoke("config", "partner-kit", "--home", str(home), "--out", str(tmp_path / "kit5"),
                        "--edge-fqdn", MX, "--domain", "contoso.com")
    assert code == 0 and "TLSA" not in (tmp_path / "kit5/README.txt").read_text()


# --- a real Postfix with the generated settings, DANE through the DNSSEC lab ------------------------------


@pytest.mark.slow
def test_generated_dane_settings_authenticate_a_server_by_tlsa() -> None:
    """A sending Postfix configured by ``config postfix --dane`` runs inside the lab's mount namespace (its
    /etc/resolv.conf names the lab's validating Unbound, with trust-ad). It delivers to a loopback Postfix
    whose key the signed zone's 3 1 1 record matches, and defers to the same server under a name whose
    record is for another key."""
    from tests.dnssec_lab import DnssecLab
    from tests.fixtures_net import require_postfix
    from tests.postfix import PostfixInstance

    require_postfix()
    server_leaf = make_leaf(INTER, ["mx-good.dane.test", "mx-bad.dane.test"])
    other = make_leaf(INTER, ["mx-bad.dane.test"])
    receiver = PostfixInstance(server_leaf.cert, server_leaf.key, [INTER.cert], hostname="mx-good.dane.test",
                               domain="good.test")
    lab = DnssecLab("dane.test.", system_resolver=True)
    for host in ("mx-good", "mx-bad"):
        lab.add(f"{host}.dane.test.", "A", "127.0.0.1")
    lab.add_tlsa("mx-good.dane.test", server_leaf.cert, port=receiver.port)
    lab.add_tlsa("mx-bad.dane.test", other.cert, port=receiver.port)

    class Sender(PostfixInstance):
        def _run(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
            # master and its smtp(8) children live in the lab's mount namespace (its resolv.conf)
            command = [self.postfix, "-c", str(self.etc), *args]
            if args[:1] == ("start",):
                command = lab.system_resolver_command(command)
            return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)

    with lab, receiver:
        sender = Sender(LEAF.cert, LEAF.key, [INTER.cert], hostname=MX, domain="contoso.test")
        etc = sender.etc
        cfg = postfix_config("fabrikam.test", ca_bundle=[PARTNER_ROOT.cert], config_dir=str(etc),
                             cert_file=str(etc / "server.pem"), key_file=str(etc / "server.key"), dane=True,
                             dane_chain=[LEAF.cert, INTER.cert])
        for name, data in cfg.files.items():
            (etc / name).write_bytes(data)
        hop = f"[{{}}.dane.test]:{receiver.port}"
        (etc / "transport").write_text(f"good.test smtp:{hop.format('mx-good')}\n"
                                       f"bad.test smtp:{hop.format('mx-bad')}\n")
        main_cf = etc / "main.cf"
        main_cf.write_text(main_cf.read_text() + cfg.main_cf + "\n".join([
            f"transport_maps = texthash:{etc / 'transport'}", "relay_domains = good.test, bad.test",
            "smtp_connect_timeout = 5s", ""]))
        old = time.time() - 10
        for f in etc.iterdir():
            os.utime(f, (old, old))
        with sender:
            with smtplib.SMTP("127.0.0.1", sender.port, timeout=10) as s:
                s.sendmail("admin@contoso.test", ["user@good.test"], b"Subject: dane\r\n\r\nDANE test\r\n")
                s.sendmail("admin@contoso.test", ["user@bad.test"], b"Subject: dane\r\n\r\nDANE test\r\n")
            log = sender.wait_for_log("status=sent", timeout=20)
            log = sender.wait_for_log("status=deferred", timeout=20)
            shown = f"\n--- sender ---\n{log}\n--- receiver ---\n{receiver.log()}\n--- unbound ---\n{lab.log()}"
            good = [line for line in log.splitlines() if "mx-good.dane.test" in line]
            bad = [line for line in log.splitlines() if "mx-bad.dane.test" in line]
            # smtp_tls_CAfile holds only the partner's root, which did not issue the server's certificate:
            # "Verified" here is DANE's 3 1 1 match.
            assert any("Verified TLS connection established to mx-good.dane.test" in line for line in good), shown
            assert any("status=sent" in line for line in good), shown
            assert any("status=deferred" in line for line in bad), shown
            assert any("certificate verification failed" in line and "no matching DANE TLSA records" in line
                       for line in bad), shown
            assert any("Untrusted TLS connection established" in line for line in bad), shown
            assert not any("status=sent" in line for line in bad), shown
