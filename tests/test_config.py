"""certkit config: the Exchange script (structure checked against the documented cmdlets per version),
the Postfix settings, and the partner kit; golden files with normalised dates and fingerprints."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from cryptography import x509

from certkit.adapters.truststore import TrustStore
from certkit.cli.common import CertkitGroup
from certkit.cli.config import COMMANDS
from certkit.configgen import exchange_script, partner_kit, postfix_config
from certkit.core.formats import pfx_bytes, sha1_thumbprint, sha256_fingerprint
from certkit.errors import InputError, UsageError
from tests.pki import make_intermediate, make_leaf, make_root
from tests.test_preflight_world import check_golden, pem

ROOT = make_root("Contoso Root", org="Contoso", key_type="rsa")
INTER = make_intermediate(ROOT, "Contoso Issuing CA", org="Contoso", key_type="rsa")
LEAF = make_leaf(INTER, ["edge.contoso.com", "contoso.com"], key_type="rsa")
PARTNER_ROOT = make_root("Fabrikam Root", org="Fabrikam")
PFX_PASSWORD = b"pfx secret"

# Documented parameters (Microsoft Learn, per version) of every command the script may use.
# Exchange 2010 runs on Windows Server 2008 R2 / PowerShell 2.0: no Import-Certificate (PKI module,
# Windows Server 2012+), and Import-ExchangeCertificate has -FileData only (-FileName from 2013).
_COMMON = {
    "Read-Host": {"Prompt", "AsSecureString"},
    "Get-Content": {"Path", "Encoding", "ReadCount"},
    "Format-List": set(),
    "Get-ChildItem": {"Path"},
    "Enable-ExchangeCertificate": {"Thumbprint", "Services", "Server", "Force", "DoNotRequireSsl", "Identity",
                                   "Confirm", "DomainController", "WhatIf"},
    "Get-ExchangeCertificate": {"Thumbprint", "Identity", "Server", "DomainController"},
    "Set-TransportConfig": {"TLSSendDomainSecureList", "TLSReceiveDomainSecureList", "Identity", "Confirm",
                            "WhatIf"},
    "Get-TransportConfig": set(),
    "Set-SendConnector": {"Identity", "DomainSecureEnabled", "DNSRoutingEnabled", "IgnoreSTARTTLS", "SmartHosts",
                          "RequireTLS", "TlsDomain", "TlsCertificateName", "Confirm", "WhatIf"},
    "Set-ReceiveConnector": {"Identity", "DomainSecureEnabled", "AuthMechanism", "RequireTLS", "Confirm",
                             "WhatIf"},
    "Test-EdgeSynchronization": {"ExcludeRecipientTest", "MaxReportSize", "MonitoringContext", "Server"},
    "Get-Queue": {"Identity", "Filter", "Server", "Exclude", "Include"},
}
DOCUMENTED: dict[str, dict[str, set[str]]] = {
    "2010": {**_COMMON,
             "Import-ExchangeCertificate": {"FileData", "Password", "PrivateKeyExportable", "Server", "Instance",
                                            "FriendlyName", "Confirm", "DomainController", "WhatIf"},
             "certutil": {"addstore"}},
    "2016": {**_COMMON,
              "Import-ExchangeCertificate": {"FileData", "FileName", "Password", "PrivateKeyExportable", "Server",
                                             "FriendlyName", "Confirm", "DomainController", "WhatIf"},
              "Import-Certificate": {"FilePath", "CertStoreLocation", "Exportable", "Confirm", "WhatIf"},
              "certutil": {"addstore"}},
}


def commands(script: str) -> list[tuple[str, list[str]]]:
    """(command, [parameters]) for every command in the script, sub-expressions and pipelines included."""
    out: list[tuple[str, list[str]]] = []
    for line in script.splitlines():
        code = line.strip()
        if not code or code.startswith("#"):
            continue
        code = re.sub(r'"(?:`.|[^"`])*"', '"S"', code)  # strings cannot hold commands or parameters
        m = re.match(r"([a-z]+)\s", code)
        if m and m.group(1) == "certutil":
            out.append(("certutil", re.findall(r"\s-([A-Za-z]+)", code)))
            continue
        # A parameter belongs to the innermost command of its parenthesis level: ([Byte[]](Get-Content ...)).
        current: list[int | None] = [None]
        for t in re.finditer(r"\(|\)|(?<![\w$-])([A-Z][a-z]+-[A-Z][A-Za-z]+)\b|\s-([A-Za-z]+)\b", code):
            if t.group(0) == "(":
                current.append(None)
            elif t.group(0) == ")":
                current.pop()
            elif t.group(1):
                out.append((t.group(1), []))
                current[-1] = len(out) - 1
            else:
                owner = current[-1]
                assert owner is not None, f"parameter outside any command: {line}"
                out[owner][1].append(t.group(2))
    return out


def script(version: str, **kwargs: object) -> str:
    opts: dict[str, object] = {"pfx_path": "C:\\certkit\\edge.pfx", "certificate": LEAF.cert, "target": version,
                               "partner_root": PARTNER_ROOT.cert}
    opts.update(kwargs)
    return exchange_script("fabrikam.com", **opts).text  # type: ignore[arg-type]


@pytest.mark.parametrize("version", ["2010", "2016"])
def test_exchange_script_uses_only_documented_cmdlets_and_parameters(version: str) -> None:
    text = script(version)
    used = commands(text)
    assert used, text
    for name, params in used:
        assert name in DOCUMENTED[version], f"{name} is not documented for Exchange {version}"
        unknown = set(params) - DOCUMENTED[version][name]
        assert not unknown, f"{name} has no parameter(s) {unknown} in Exchange {version}"
    names = [n for n, _ in used]
    for needed in ("Import-ExchangeCertificate", "Enable-ExchangeCertificate", "Set-TransportConfig",
                   "Set-SendConnector", "Set-ReceiveConnector", "Get-Queue", "Test-EdgeSynchronization"):
        assert needed in names, needed
    imports = dict(used)["Import-ExchangeCertificate"]
    assert ("FileData" if version == "2010" else "FileName") in imports
    assert ("Import-Certificate" in names) == (version == "2016")
    assert ("certutil" in names) == (version == "2010")


@pytest.mark.parametrize("version", ["2010", "2016"])
def test_exchange_script_content(version: str) -> None:
    text = script(version)
    thumb = sha1_thumbprint(LEAF.cert)
    assert re.fullmatch(r"[0-9A-F]{40}", thumb)
    assert f"Enable-ExchangeCertificate -Thumbprint {thumb} -Services SMTP" in text
    # Add, never replace: every domain-secure list change is a @{Add=...}.
    assert 'Set-TransportConfig -TLSSendDomainSecureList @{Add="fabrikam.com"}' in text
    assert 'Set-TransportConfig -TLSReceiveDomainSecureList @{Add="fabrikam.com"}' in text
    assert not re.search(r"-TLS\w+DomainSecureList\s+(?!@\{Add=)", text)
    assert "-DomainSecureEnabled $true -DNSRoutingEnabled $true -IgnoreSTARTTLS $false" in text
    # An Edge subscription (the default): ExchangeServer stays next to Tls, for EdgeSync's Hub-to-Edge connection.
    assert "-DomainSecureEnabled $true -AuthMechanism Tls, ExchangeServer\n" in text
    assert "EdgeSync" in text.split("-AuthMechanism")[0].rsplit("Set-SendConnector", 1)[1]
    assert "Read-Host -Prompt" in text and "-AsSecureString" in text and "pfx secret" not in text
    assert "Get-Queue | Format-List NextHopDomain,Status,LastError" in text
    assert sha1_thumbprint(PARTNER_ROOT.cert) in text
    # A comment before every command line.
    lines = [line for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if not line.startswith("#"):
            assert lines[i - 1].startswith("#"), f"no comment before: {line}"
    check_golden(f"exchange-{version}.ps1", text)


def test_exchange_script_refuses_wildcards_and_escapes_names() -> None:
    with pytest.raises(InputError):
        exchange_script("*.fabrikam.com", pfx_path="x.pfx", certificate=LEAF.cert)
    with pytest.raises(InputError):
        exchange_script("fabrikam.com", pfx_path="x.pfx", certificate=LEAF.cert, target="2007")
    text = exchange_script("fabrikam.com", pfx_path="x.pfx", certificate=LEAF.cert,
                           send_connector='To "Internet" $x').text
    assert 'Set-SendConnector -Identity "To `"Internet`" `$x"' in text
    assert "Test-EdgeSynchronization" not in exchange_script(
        "fabrikam.com", pfx_path="x.pfx", certificate=LEAF.cert, edge_subscription=False).text


@pytest.mark.parametrize("version", ["2010", "2016"])
def test_exchange_script_edge_subscription_and_auth_mechanism(version: str) -> None:
    with_sub = script(version)
    lines = with_sub.splitlines()
    [receive] = [line for line in lines if line.startswith("Set-ReceiveConnector")]
    assert receive.endswith("-AuthMechanism Tls, ExchangeServer")
    test_sync = lines.index("Test-EdgeSynchronization")
    assert "NOT on the Edge" in lines[test_sync - 1] and "Mailbox" in lines[test_sync - 1]
    assert test_sync > lines.index(next(line for line in lines if line.startswith("# --- Checks")))
    without = script(version, edge_subscription=False)
    [receive] = [line for line in without.splitlines() if line.startswith("Set-ReceiveConnector")]
    assert receive.endswith("-AuthMechanism Tls")
    assert "Test-EdgeSynchronization" not in without and "ExchangeServer" not in without


@pytest.mark.parametrize("version", ["2010", "2016"])
def test_exchange_script_without_partner_root_keeps_the_import_with_a_placeholder(version: str) -> None:
    text = script(version, partner_root=None)
    path = "C:\\certkit\\fabrikam.com-root.cer"
    importer = 'certutil -addstore Root "' if version == "2010" else 'Import-Certificate -FilePath "'
    assert importer + path + '"' in text, text
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(importer))
    assert any("PLACEHOLDER" in line and path in line for line in lines[at - 4:at])
    assert "Get-ChildItem -Path Cert:\\LocalMachine\\Root" in text
    for name, params in commands(text):
        assert name in DOCUMENTED[version] and not set(params) - DOCUMENTED[version][name], (name, params)
    given = script(version, partner_root=None, partner_root_path="D:\\roots\\fabrikam.cer")
    assert "D:\\roots\\fabrikam.cer" in given and "PLACEHOLDER" in given


def test_postfix_config() -> None:
    cfg = postfix_config("Fabrikam.com", ca_bundle=[PARTNER_ROOT.cert, ROOT.cert], cert_file="/etc/ssl/edge.pem",
                         key_file="/etc/ssl/edge.key")
    assert "fabrikam.com secure match=fabrikam.com:.fabrikam.com" in cfg.tls_policy.splitlines()
    settings = dict(line.split(" = ", 1) for line in cfg.main_cf.splitlines() if " = " in line and
                    not line.startswith("#"))
    assert settings["smtp_tls_policy_maps"] == "texthash:/etc/postfix/tls_policy"
    assert settings["smtp_tls_cert_file"] == settings["smtpd_tls_cert_file"] == "/etc/ssl/edge.pem"
    assert settings["smtp_tls_CAfile"] == settings["smtpd_tls_CAfile"] == "/etc/postfix/certkit-ca.pem"
    assert settings["smtpd_tls_ask_ccert"] == "yes"
    assert "-o smtpd_tls_req_ccert=yes" in cfg.master_cf and "-o smtpd_tls_security_level=encrypt" in cfg.master_cf
    bundle = x509.load_pem_x509_certificates(cfg.files["certkit-ca.pem"])
    assert bundle == [PARTNER_ROOT.cert, ROOT.cert]
    with pytest.raises(InputError):
        postfix_config("fabrikam.com", ca_bundle=[])
    check_golden("postfix-main.cf", cfg.main_cf)
    check_golden("postfix-tls_policy", cfg.tls_policy)
    check_golden("postfix-master.cf", cfg.master_cf)


def test_partner_kit() -> None:
    files = partner_kit(ROOT.cert, edge_fqdn="edge.contoso.com", domains=["contoso.com", "contoso.net"],
                        crl_url="http://crl.contoso.com/contoso.crl", organisation="Contoso")
    assert set(files) == {"contoso.com-root.pem", "contoso.com-root.cer", "README.txt"}
    assert x509.load_pem_x509_certificate(files["contoso.com-root.pem"]) == ROOT.cert
    assert x509.load_der_x509_certificate(files["contoso.com-root.cer"]) == ROOT.cert
    text = files["README.txt"].decode()
    for needed in (sha256_fingerprint(ROOT.cert), sha1_thumbprint(ROOT.cert), "edge.contoso.com",
                   "contoso.com, contoso.net", "http://crl.contoso.com/contoso.crl",
                   "contoso.net secure match=contoso.net:.contoso.net"):
        assert needed in text
    check_golden("partner-kit.txt", text)


# --- the commands --------------------------------------------------------------------------------


def cli() -> click.Group:
    group = CertkitGroup("certkit")
    for command in COMMANDS:
        group.add_command(command)
    return group


def test_cli_exchange(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pfx = tmp_path / "edge.pfx"
    pfx.write_bytes(pfx_bytes(LEAF.key, LEAF.cert, [INTER.cert], PFX_PASSWORD))
    (tmp_path / "root.pem").write_bytes(pem(PARTNER_ROOT.cert))
    monkeypatch.setenv("CERTKIT_PFX_PASSWORD", PFX_PASSWORD.decode())
    result = CliRunner().invoke(cli(), ["config", "exchange", "--partner", "fabrikam.com", "--cert-pfx", str(pfx),
                                        "--target", "2010", "--partner-root", str(tmp_path / "root.pem")])
    assert result.exit_code == 0, result.output
    assert f"-Thumbprint {sha1_thumbprint(LEAF.cert)}" in result.stdout
    assert 'Get-Content -Path "C:\\certkit\\edge.pfx" -Encoding Byte -ReadCount 0' in result.stdout
    assert "certutil -addstore Root" in result.stdout
    out = tmp_path / "enable.ps1"
    result = CliRunner().invoke(cli(), ["config", "exchange", "--partner", "fabrikam.com", "--cert-pfx", str(pfx),
                                        "--out", str(out)])
    assert result.exit_code == 0 and '-FileName "\\\\$env:COMPUTERNAME\\c`$\\certkit\\edge.pfx"' in out.read_text()
    assert 'Import-Certificate -FilePath "C:\\certkit\\fabrikam.com-root.cer"' in out.read_text()  # placeholder
    # Our own leaf is not the partner's root: refused, nothing printed.
    (tmp_path / "leaf.pem").write_bytes(pem(LEAF.cert))
    result = CliRunner().invoke(cli(), ["config", "exchange", "--partner", "fabrikam.com", "--cert-pfx", str(pfx),
                                        "--partner-root", str(tmp_path / "leaf.pem")])
    assert result.exit_code == 2 and "not a root" in result.stderr and not result.stdout
    # The certificate in the PFX is linted for the partner's Edge: an EC key on Exchange 2010 is a warning.
    result = CliRunner().invoke(cli(), ["config", "exchange", "--partner", "fabrikam.com", "--cert-pfx", str(pfx),
                                        "--target", "2010"])
    # (this test leaf has no CRL distribution point, which Exchange needs: that is said; its RSA key is fine)
    assert result.exit_code == 0 and "revocation.no-cdp" in result.stderr and "key.not-rsa" not in result.stderr
    ec_leaf = make_leaf(INTER, ["edge.contoso.com", "contoso.com"], key_type="ec")
    ec_pfx = tmp_path / "ec.pfx"
    ec_pfx.write_bytes(pfx_bytes(ec_leaf.key, ec_leaf.cert, [INTER.cert], PFX_PASSWORD))
    result = CliRunner().invoke(cli(), ["config", "exchange", "--partner", "fabrikam.com", "--cert-pfx",
                                        str(ec_pfx), "--target", "2010"])
    assert result.exit_code == 0 and "warning" in result.stderr and "key.not-rsa" in result.stderr
    monkeypatch.setenv("CERTKIT_PFX_PASSWORD", "wrong")
    result = CliRunner().invoke(cli(), ["config", "exchange", "--partner", "fabrikam.com", "--cert-pfx", str(pfx)])
    assert result.exit_code == 2 and "password" in result.stderr.lower()


def test_cli_exchange_target_replaces_version_and_refuses_online(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 10: `--target 2010|2016|online` replaced `--version`, which clashed with the usual `--version`.
    pfx = tmp_path / "edge.pfx"
    pfx.write_bytes(pfx_bytes(LEAF.key, LEAF.cert, [INTER.cert], PFX_PASSWORD))
    monkeypatch.setenv("CERTKIT_PFX_PASSWORD", PFX_PASSWORD.decode())
    args = ["config", "exchange", "--partner", "fabrikam.com", "--cert-pfx", str(pfx)]
    default = CliRunner().invoke(cli(), args)
    assert default.exit_code == 0 and default.stdout == CliRunner().invoke(cli(), [*args, "--target", "2016"]).stdout
    assert "Exchange 2013, 2016, 2019 or Subscription Edition" in default.stdout.splitlines()[0]
    online = CliRunner().invoke(cli(), [*args, "--target", "online"])
    assert online.exit_code == 2 and not online.stdout
    assert "Exchange Online connectors: not yet supported; see issue 12." in online.stderr
    old = CliRunner().invoke(cli(), [*args, "--version", "2010"])
    assert old.exit_code == 2 and "No such option '--version'" in old.stderr
    with pytest.raises(UsageError, match="not yet supported; see issue 12"):
        exchange_script("fabrikam.com", pfx_path="x.pfx", certificate=LEAF.cert, target="online")


def test_cli_postfix_and_partner_kit(tmp_path: Path, make_ca: object) -> None:
    store = tmp_path / "trust"
    TrustStore(store).add(PARTNER_ROOT.cert, label="fabrikam", partners=["fabrikam.com"])
    result = CliRunner().invoke(cli(), ["config", "postfix", "--partner", "fabrikam.com", "--store", str(store),
                                        "--out", str(tmp_path / "pf")])
    assert result.exit_code == 0, result.output
    # issue #12: --out also writes inbound enforcement (main.cf.inbound, master.cf.inbound, certkit-partners.json)
    assert sorted(p.name for p in (tmp_path / "pf").iterdir()) == [
        "certkit-ca.pem", "certkit-partners.json", "main.cf.certkit", "main.cf.inbound", "master.cf.certkit",
        "master.cf.inbound", "tls_policy"]
    assert x509.load_pem_x509_certificates((tmp_path / "pf/certkit-ca.pem").read_bytes()) == [PARTNER_ROOT.cert]
    result = CliRunner().invoke(cli(), ["config", "postfix", "--partner", "fabrikam.com", "--store", str(store),
                                        "--cert", "x.pem"])
    assert result.exit_code == 2
    ca = make_ca()  # type: ignore[operator]
    result = CliRunner().invoke(cli(), ["config", "partner-kit", "--home", str(ca.home), "--out",
                                        str(tmp_path / "kit"), "--edge-fqdn", "edge.contoso.com",
                                        "--domain", "contoso.com"])
    assert result.exit_code == 0, result.output
    readme = (tmp_path / "kit/README.txt").read_text()
    assert "http://127.0.0.1:1/contoso.crl" in readme and sha256_fingerprint(ca.root) in readme
    result = CliRunner().invoke(cli(), ["config", "partner-kit", "--home", str(ca.home), "--out",
                                        str(tmp_path / "kit"), "--edge-fqdn", "edge.contoso.com",
                                        "--domain", "contoso.com"])
    assert result.exit_code == 2  # would overwrite
    # With an intermediate, the partner's Edge must also reach the root's CRL (named in our intermediate).
    ca2 = make_ca(intermediate=True)  # type: ignore[operator]
    result = CliRunner().invoke(cli(), ["config", "partner-kit", "--home", str(ca2.home), "--out",
                                        str(tmp_path / "kit2"), "--edge-fqdn", "edge.contoso.com",
                                        "--domain", "contoso.com"])
    assert result.exit_code == 0, result.output
    readme = (tmp_path / "kit2/README.txt").read_text()
    assert "http://127.0.0.1:1/contoso.crl" in readme and "http://127.0.0.1:1/contoso-root.crl" in readme


# --- nothing a caller gives may inject lines into main.cf / master.cf -----------------------------------


@pytest.mark.parametrize("field,value", [
    ("listen", "2525\nsmtp inet n - n - - smtpd -o smtpd_tls_req_ccert=no"),
    ("listen", "2525\r"),
    ("listen", "127.0.0.1:2525 evil"),
    ("listen", "127.0.0.1:70000"),
    ("listen", "0"),
    ("listen", "host name:25"),
    ("listen", ""),
    ("config_dir", "/etc/postfix\nsmtpd_tls_req_ccert = no"),
    ("config_dir", "/etc/post\x00fix"),
    ("config_dir", "etc/postfix"),
    ("config_dir", "/etc/$myhostname"),
    ("cert_file", "/etc/ssl/edge.pem\nsmtpd_tls_security_level = none"),
    ("key_file", "/etc/ssl/my key.pem"),
    ("partner", "fabrikam.com\nsmtp_tls_policy_maps = "),
])
def test_postfix_config_refuses_injected_lines(field: str, value: str) -> None:
    kwargs: dict[str, object] = {"ca_bundle": [PARTNER_ROOT.cert], "cert_file": "/etc/ssl/edge.pem",
                                 "key_file": "/etc/ssl/edge.key"}
    partner = value if field == "partner" else "fabrikam.com"
    if field != "partner":
        kwargs[field] = value
    with pytest.raises(InputError):
        postfix_config(partner, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("listen", ["2525", "127.0.0.1:2525", "[::1]:2525", "mx.contoso.com:25"])
def test_postfix_config_accepts_listen_shapes(listen: str) -> None:
    cfg = postfix_config("fabrikam.com", ca_bundle=[PARTNER_ROOT.cert], listen=listen, config_dir="/etc/postfix/")
    service = next(line for line in cfg.master_cf.splitlines() if line and not line.startswith("#"))
    assert service.startswith(f"{listen} inet ")
    assert "/etc/postfix/certkit-ca.pem" in cfg.main_cf


def test_cli_postfix_refuses_newlines(tmp_path: Path) -> None:
    store = tmp_path / "trust"
    TrustStore(store).add(PARTNER_ROOT.cert, label="fabrikam", partners=["fabrikam.com"])
    for option, value in (("--listen", "2525\nsmtp inet n - n - - smtpd"),
                          ("--config-dir", "/etc/postfix\nsmtpd_tls_req_ccert = no")):
        result = CliRunner().invoke(cli(), ["config", "postfix", "--partner", "fabrikam.com", "--store", str(store),
                                            option, value])
        assert result.exit_code == 2, result.output
        assert result.stdout == "" and len(result.stderr.splitlines()) == 1 and option in result.stderr
