"""certkit config: the Exchange script (structure checked against the documented cmdlets per version),
the Postfix settings, and the partner kit; golden files with normalised dates and fingerprints."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certkit.adapters.truststore import TrustStore
from certkit.cli.common import CertkitGroup
from certkit.cli.config import COMMANDS
from certkit.configgen import (
    RUN_IN_EXCHANGE_ONLINE,
    RUN_ON_EDGE,
    RUN_ON_HUB,
    RUN_ON_INTERNET_FACING,
    RUN_ON_MAILBOX,
    exchange_script,
    partner_kit,
    postfix_config,
)
from certkit.core.cmdlets import CMDLETS, cmdlet
from certkit.core.formats import pfx_bytes, sha1_thumbprint, sha256_fingerprint
from certkit.errors import InputError
from tests.pki import make_intermediate, make_leaf, make_root
from tests.test_preflight_world import check_golden, pem

ROOT = make_root("Contoso Root", org="Contoso", key_type="rsa")
INTER = make_intermediate(ROOT, "Contoso Issuing CA", org="Contoso", key_type="rsa")
LEAF = make_leaf(INTER, ["edge.contoso.com", "contoso.com"], key_type="rsa")
PARTNER_ROOT = make_root("Fabrikam Root", org="Fabrikam")
PFX_PASSWORD = b"pfx secret"



def commands(script: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """(command, [(parameter, value)]) for every command in the script, sub-expressions and pipelines included.
    A value is the word after the parameter when it is a bare word (``-Services SMTP``), else ``None``."""
    out: list[tuple[str, list[tuple[str, str | None]]]] = []
    for line in script.splitlines():
        code = line.strip()
        if not code or code.startswith("#"):
            continue
        code = re.sub(r'"(?:`.|[^"`])*"', '"S"', code)  # strings cannot hold commands or parameters
        m = re.match(r"([a-z]+)\s", code)
        if m and m.group(1) == "certutil":
            out.append(("certutil", [(p, None) for p in re.findall(r"\s-([A-Za-z]+)", code)]))
            continue
        # A parameter belongs to the innermost command of its parenthesis level: ([Byte[]](Get-Content ...)).
        current: list[int | None] = [None]
        token = r"\(|\)|(?<![\w$-])([A-Z][a-z]+-[A-Z][A-Za-z]+)\b|\s-([A-Za-z]+)\b(?:\s+([A-Za-z][\w:\\]*)\b)?"
        for t in re.finditer(token, code):
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
                out[owner][1].append((t.group(2), t.group(3)))
    return out


def assert_documented(text: str, target: str) -> list[str]:
    """Every command of ``text`` and each of its parameters (and enumerated values) is in the target's table."""
    used = commands(text)
    assert used, text
    for name, params in used:
        entry = cmdlet(target, name)
        assert entry is not None, f"{name} is not documented for {target}"
        assert entry.url.startswith("https://learn.microsoft.com/"), entry.url
        for param, value in params:
            assert entry.allows(param), f"{name} has no parameter -{param} in {target} ({entry.url})"
            if value is not None and not value.startswith("$"):
                assert entry.allows(param, value), f"{name} -{param} {value} is not documented ({entry.url})"
    return [n for n, _ in used]


def script(version: str, **kwargs: object) -> str:
    opts: dict[str, object] = {"pfx_path": "C:\\certkit\\edge.pfx", "certificate": LEAF.cert, "target": version,
                               "partner_root": PARTNER_ROOT.cert}
    opts.update(kwargs)
    return exchange_script("fabrikam.com", **opts).text  # type: ignore[arg-type]


@pytest.mark.parametrize("version", ["2010", "2016"])
@pytest.mark.parametrize("edge_subscription", [True, False])
def test_exchange_script_uses_only_documented_cmdlets_and_parameters(version: str, edge_subscription: bool) -> None:
    text = script(version, edge_subscription=edge_subscription)
    names = assert_documented(text, version)
    for needed in ("Import-ExchangeCertificate", "Enable-ExchangeCertificate", "Set-TransportConfig",
                   "Set-SendConnector", "Set-ReceiveConnector", "Get-Queue"):
        assert needed in names, needed
    assert ("Test-EdgeSynchronization" in names) == edge_subscription
    imports = [p for p, _ in dict(commands(text))["Import-ExchangeCertificate"]]
    # -FileName is documented for Exchange 2013 only (removed from 2016 and 2019 by the 2022 H1 CUs).
    assert "FileData" in imports and "FileName" not in imports
    assert ("Import-Certificate" in names) == (version == "2016")
    assert ("certutil" in names) == (version == "2010")
    assert ("-TlsCertificateName" in text) == (version == "2016")


def test_exchange_online_script_uses_only_documented_cmdlets_and_parameters() -> None:
    text = exchange_script("fabrikam.com", target="online").text
    names = assert_documented(text, "online")
    assert {"New-InboundConnector", "New-OutboundConnector", "Connect-ExchangeOnline"} <= set(names)
    # Exchange Online uses Microsoft's certificate: nothing to import, no root to trust, no on-premises cmdlet.
    assert not {"Import-ExchangeCertificate", "Enable-ExchangeCertificate", "Import-Certificate", "certutil",
                "Set-TransportConfig", "Set-SendConnector", "Set-ReceiveConnector"} & set(names)
    assert ('New-InboundConnector -Name "certkit: from fabrikam.com" -ConnectorType Partner -SenderDomains '
            '"fabrikam.com" -RequireTls $true -RestrictDomainsToCertificate $true -TlsSenderCertificateName '
            '"*.fabrikam.com"') in text
    assert ('-ConnectorType Partner -RecipientDomains "fabrikam.com" -UseMXRecord $true -TlsSettings DomainValidation '
            '-TlsDomain "*.fabrikam.com"') in text
    assert "450 4.7.320 Certificate validation failed" in text
    exact = exchange_script("fabrikam.com", target="online", certificate_domain="mail.fabrikam.com").text
    assert '-TlsSenderCertificateName "mail.fabrikam.com"' in exact and '-TlsDomain "mail.fabrikam.com"' in exact
    with pytest.raises(InputError, match="embeds a wildcard"):
        exchange_script("fabrikam.com", target="online", certificate_domain="mail.*.fabrikam.com")
    with pytest.raises(InputError, match="for --target online"):
        exchange_script("fabrikam.com", pfx_path="x.pfx", certificate=LEAF.cert, certificate_domain="fabrikam.com")
    check_golden("exchange-online.ps1", text)


def test_the_cmdlet_table_cites_microsoft_learn_for_every_target() -> None:
    assert set(CMDLETS) == {"2010", "2016", "online"}
    for target, table in CMDLETS.items():
        for name, entry in table.items():
            assert entry.name == name and entry.url.startswith("https://learn.microsoft.com/"), (target, name)
    # Where Microsoft documents a difference between the targets, the table has it.
    assert not CMDLETS["2010"]["Set-SendConnector"].allows("TlsCertificateName")
    assert CMDLETS["2016"]["Set-SendConnector"].allows("TlsCertificateName")
    assert not any(c.allows("FileName") for t in CMDLETS.values() for c in t.values())
    assert "Import-Certificate" not in CMDLETS["2010"] and "New-InboundConnector" not in CMDLETS["2016"]
    assert CMDLETS["online"]["New-OutboundConnector"].allows("TlsSettings", "DomainValidation")
    assert not CMDLETS["online"]["New-OutboundConnector"].allows("TlsSettings", "Domainvalidation ")
    # docs/cli.md shows the table with the same pages.
    cli_doc = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    for table in CMDLETS.values():
        for entry in table.values():
            assert f"[{entry.name}]({entry.url})" in cli_doc, entry.name


MARKERS = (RUN_ON_EDGE, RUN_ON_MAILBOX, RUN_ON_HUB, RUN_ON_INTERNET_FACING, RUN_IN_EXCHANGE_ONLINE)


def where_each_runs(text: str) -> list[tuple[str, str]]:
    """(command line, its marker) for every command line: the marker is the comment line right above it."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        if line.strip() and not line.startswith("#"):
            assert i > 0 and lines[i - 1] in MARKERS, f"no 'Run on/in' line before: {line}"
            out.append((line, lines[i - 1]))
    return out


@pytest.mark.parametrize("target", ["2010", "2016", "online"])
@pytest.mark.parametrize("edge_subscription", [True, False])
def test_every_command_says_where_it_runs(target: str, edge_subscription: bool) -> None:
    if target == "online":
        text = exchange_script("fabrikam.com", target="online").text
        assert {m for _, m in where_each_runs(text)} == {RUN_IN_EXCHANGE_ONLINE}
        return
    text = script(target, edge_subscription=edge_subscription)
    where = where_each_runs(text)

    def runs(prefix: str) -> set[str]:
        return {m for line, m in where if line.startswith(prefix)}

    org = RUN_ON_HUB if target == "2010" else RUN_ON_MAILBOX
    if edge_subscription:
        # Organisation settings go to the Mailbox (Hub) server and reach the Edge by EdgeSync; the Edge refuses
        # Set-SendConnector once subscribed. The certificate, the root and the Receive connector are the Edge's.
        for prefix in ("Set-TransportConfig", "Set-SendConnector", "Test-EdgeSynchronization",
                       "Start-EdgeSynchronization", "Get-TransportConfig"):
            assert runs(prefix) == {org}, prefix
        for prefix in ("Import-ExchangeCertificate", "Enable-ExchangeCertificate", "Set-ReceiveConnector",
                       "Import-Certificate" if target == "2016" else "certutil", "Get-Queue", "$pfxPassword"):
            assert runs(prefix) == {RUN_ON_EDGE}, prefix
    else:
        assert {m for _, m in where} == {RUN_ON_INTERNET_FACING}


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
    assert "NOT on the Edge" in lines[test_sync - 2] and lines[test_sync - 1] == (RUN_ON_HUB if version == "2010"
                                                                                    else RUN_ON_MAILBOX)
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
    assert any("PLACEHOLDER" in line and path in line for line in lines[at - 5:at])
    assert "Get-ChildItem -Path Cert:\\LocalMachine\\Root" in text
    assert_documented(text, version)
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
    assert '-FileData ([System.IO.File]::ReadAllBytes("C:\\certkit\\edge.pfx"))' in result.stdout
    # The root is read under the name it was given (root.pem), and the copy step lists it (issue 12).
    assert 'certutil -addstore Root "C:\\certkit\\root.pem"' in result.stdout
    assert "#   C:\\certkit\\root.pem  fabrikam.com's root certificate" in result.stdout
    out = tmp_path / "enable.ps1"
    result = CliRunner().invoke(cli(), ["config", "exchange", "--partner", "fabrikam.com", "--cert-pfx", str(pfx),
                                        "--out", str(out)])
    # -FileName (a UNC path) is Exchange 2013's only: 2016 reads the bytes too, from C:\certkit on the Edge.
    assert result.exit_code == 0
    assert '-FileData ([System.IO.File]::ReadAllBytes("C:\\certkit\\edge.pfx"))' in out.read_text()
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


def test_cli_exchange_target_replaces_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 10: `--target 2010|2016|online` replaced `--version`, which clashed with the usual `--version`.
    pfx = tmp_path / "edge.pfx"
    pfx.write_bytes(pfx_bytes(LEAF.key, LEAF.cert, [INTER.cert], PFX_PASSWORD))
    monkeypatch.setenv("CERTKIT_PFX_PASSWORD", PFX_PASSWORD.decode())
    args = ["config", "exchange", "--partner", "fabrikam.com", "--cert-pfx", str(pfx)]
    default = CliRunner().invoke(cli(), args)
    assert default.exit_code == 0 and default.stdout == CliRunner().invoke(cli(), [*args, "--target", "2016"]).stdout
    assert "Exchange 2013, 2016, 2019 or Subscription Edition" in default.stdout.splitlines()[0]
    old = CliRunner().invoke(cli(), [*args, "--version", "2010"])
    assert old.exit_code == 2 and "No such option '--version'" in old.stderr


def test_cli_exchange_online(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 12 replaces the refusal of --target online ("not yet supported") with the connector script.
    base = ["config", "exchange", "--partner", "fabrikam.com", "--target", "online"]
    result = CliRunner().invoke(cli(), [*base, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["target"] == "online" and doc["certificate"] is None and doc["pfx_server_path"] is None
    assert doc["certificate_domain"] == "*.fabrikam.com" and doc["files"] == []
    assert "New-InboundConnector" in doc["script"]["text"]
    # No PFX: Exchange Online presents Microsoft's certificate.
    pfx = tmp_path / "edge.pfx"
    pfx.write_bytes(pfx_bytes(LEAF.key, LEAF.cert, [INTER.cert], PFX_PASSWORD))
    refused = CliRunner().invoke(cli(), [*base, "--cert-pfx", str(pfx)])
    assert refused.exit_code == 2 and "Microsoft's certificate" in refused.stderr and not refused.stdout
    # A private root cannot be trusted by Exchange Online: said before anything is written.
    (tmp_path / "fab-root.cer").write_bytes(PARTNER_ROOT.cert.public_bytes(serialization.Encoding.DER))
    private = CliRunner().invoke(cli(), [*base, "--partner-root", str(tmp_path / "fab-root.cer")])
    assert private.exit_code == 2 and "not a public CA" in private.stderr and not private.stdout
    on_premises = CliRunner().invoke(cli(), ["config", "exchange", "--partner", "fabrikam.com"])
    assert on_premises.exit_code == 2 and "--cert-pfx" in on_premises.stderr


def test_cli_exchange_uses_the_file_names_given_and_lists_them_to_copy(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 12: the user gave fab-root.cer; the script imported C:\certkit\fabrikam.com-root.cer and said
    # nothing about copying it.
    pfx = tmp_path / "contoso-edge.pfx"
    pfx.write_bytes(pfx_bytes(LEAF.key, LEAF.cert, [INTER.cert], PFX_PASSWORD))
    (tmp_path / "fab-root.cer").write_bytes(PARTNER_ROOT.cert.public_bytes(serialization.Encoding.DER))
    monkeypatch.setenv("CERTKIT_PFX_PASSWORD", PFX_PASSWORD.decode())
    for target, importer in (("2016", 'Import-Certificate -FilePath "'), ("2010", 'certutil -addstore Root "')):
        result = CliRunner().invoke(cli(), ["config", "exchange", "--partner", "fabrikam.com", "--target", target,
                                            "--cert-pfx", str(pfx), "--partner-root", str(tmp_path / "fab-root.cer"),
                                            "--json"])
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        text = doc["script"]["text"]
        assert importer + 'C:\\certkit\\fab-root.cer"' in text and "fabrikam.com-root.cer" not in text
        assert '-FileData ([System.IO.File]::ReadAllBytes("C:\\certkit\\contoso-edge.pfx"))' in text
        lines = text.splitlines()
        copy = lines.index(next(line for line in lines if line.startswith("# --- 0. Copy these files to C:\\certkit")))
        assert "Edge Transport server" in lines[copy]
        listed = [line.split()[1] for line in lines[copy + 1:copy + 3]]
        assert listed == ["C:\\certkit\\contoso-edge.pfx", "C:\\certkit\\fab-root.cer"]
        # The copy step comes before any command.
        first = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
        assert copy < first
        assert [f["path"] for f in doc["files"]] == listed
    other = CliRunner().invoke(cli(), ["config", "exchange", "--partner", "fabrikam.com", "--cert-pfx", str(pfx),
                                       "--partner-root", str(tmp_path / "fab-root.cer"),
                                       "--server-path", "D:\\transport\\edge.pfx"])
    assert 'Import-Certificate -FilePath "D:\\transport\\fab-root.cer"' in other.stdout
    assert "# --- 0. Copy these files to D:\\transport on the Edge Transport server" in other.stdout


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
