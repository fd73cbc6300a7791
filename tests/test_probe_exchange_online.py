"""``--validator exchange-online``: a partner's server judged as an Exchange Online connector would, over real
sockets against a lab endpoint (Exchange personality).

Exchange Online's connectors match the certificate's subject CN or a DNS subjectAltName against the connector's
certificate domain (``TlsSenderCertificateName``, ``TlsDomain``; ``*.D`` is D and every host within it), check
revocation lists, and trust only public CAs. A name that does not match is what Exchange Online shows as
``450 4.7.320 Certificate validation failed`` with ``MSG=SubjectMismatch``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from certkit.adapters.truststore import TrustStore
from certkit.checks.probe import ProbeOptions, probe_sync
from certkit.cli.probe import probe_cmd
from certkit.core.findings import CATALOGUE, Finding
from certkit.core.personality import EXCHANGE_ONLINE, validator_rules
from certkit.core.trust import Anchor, AnchorSet
from certkit.core.verify import certificate_name_matches
from certkit.errors import InputError
from certkit.lab.server import LabServer, Personality
from tests.lab_fixtures import LabPki
from tests.pki import make_leaf, make_root

pytestmark = pytest.mark.usefixtures("time_limit")

Start = Callable[..., LabServer]
SUBJECT_MISMATCH = "[{LED=450 4.7.320 Certificate validation failed};{MSG=SubjectMismatch}]"


def _probe(server: LabServer, anchors: object, **kwargs: object) -> list[Finding]:
    options = ProbeOptions(validator="exchange-online", mail_from="alice@contoso.test", rcpt_to="bob@lab.test",
                           timeout=5, **kwargs)  # type: ignore[arg-type]
    results = probe_sync([f"127.0.0.1:{server.port}"], anchors=anchors, options=options)
    [addr] = results[0].addresses
    assert addr.session is not None and addr.session.tls is not None
    return list(results[0].all_findings)


def codes(findings: list[Finding]) -> set[str]:
    return {f.code for f in findings}


def test_a_certificate_that_does_not_name_the_connector_domain_gets_subject_mismatch(lab_server: Start,
                                                                                      lab_pki: LabPki) -> None:
    server = lab_server(personality=Personality.EXCHANGE)  # presents mx.lab.test, lab.test
    found = _probe(server, [lab_pki.root.cert], domain="fabrikam.test")
    [mismatch] = [f for f in found if f.code == "name.connector-mismatch"]
    assert mismatch.evidence["reference"] == "*.fabrikam.test"
    assert mismatch.evidence["names"] == ["mx.lab.test", "lab.test"]
    assert mismatch.entry.exchange_online_text == SUBJECT_MISMATCH == EXCHANGE_ONLINE["subject-mismatch"]
    assert mismatch.to_dict()["exchange_online_text"] == SUBJECT_MISMATCH
    # The connector's rule replaces Domain Security's: no name.domain-mismatch beside it.
    assert "name.domain-mismatch" not in codes(found)
    # The same certificate for the domain it names: no mismatch.
    assert "name.connector-mismatch" not in codes(_probe(server, [lab_pki.root.cert], domain="lab.test"))
    # A host rule (--name) is the connector's exact value: the MX host it names, not another host.
    assert "name.connector-mismatch" not in codes(_probe(server, [lab_pki.root.cert], name="mx.lab.test"))
    assert "name.connector-mismatch" in codes(_probe(server, [lab_pki.root.cert], name="mx2.lab.test"))


def test_a_private_root_is_refused_and_a_public_one_is_not(lab_server: Start, lab_pki: LabPki) -> None:
    server = lab_server(personality=Personality.EXCHANGE)
    private = _probe(server, AnchorSet.of([lab_pki.root.cert]), domain="lab.test")
    [f] = [f for f in private if f.code == "chain.not-public"]
    assert f.entry.exchange_online_text == "450 4.7.320 Certificate validation failed"
    assert f.evidence["origin"] == "managed"
    # The same root as one of the public CAs (as certifi's roots are loaded): the chain is acceptable.
    public = AnchorSet((Anchor(lab_pki.root.cert, origin="certifi"),))
    assert "chain.not-public" not in codes(_probe(server, public, domain="lab.test"))
    # Exchange Online checks revocation lists (CertificateValidation/DomainValidation): the lab certificate has
    # no CRL distribution point, and that is an error here as it is for Exchange Server.
    assert validator_rules("exchange-online").checks_revocation
    assert "revocation.no-cdp" in codes(private)


def test_the_cli_offers_the_validator_and_shows_what_exchange_online_shows(lab_server: Start, lab_pki: LabPki,
                                                                           tmp_path: Path) -> None:
    server = lab_server(personality=Personality.EXCHANGE)
    store = tmp_path / "trust"
    TrustStore(store).add(lab_pki.root.cert, label="lab")
    result = CliRunner().invoke(probe_cmd, [f"127.0.0.1:{server.port}", "--validator", "exchange-online",
                                            "--domain", "fabrikam.test", "--store", str(store), "--managed-only",
                                            "--mail-from", "alice@contoso.test", "--rcpt", "bob@lab.test",
                                            "--timeout", "5"])
    assert result.exit_code == 1, result.output
    assert "name.connector-mismatch" in result.stdout
    assert f"Exchange Online shows: {SUBJECT_MISMATCH}" in result.stdout
    with pytest.raises(InputError, match="exchange-online"):
        ProbeOptions(validator="exchange-365")  # type: ignore[arg-type]


@pytest.mark.parametrize(("names", "reference", "matches"), [
    (["fabrikam.com"], "fabrikam.com", True),
    (["mail.fabrikam.com"], "fabrikam.com", False),          # the exact value names only itself
    (["mail.fabrikam.com"], "*.fabrikam.com", True),         # *.D: every host within D ...
    (["fabrikam.com"], "*.fabrikam.com", True),              # ... and D itself (Microsoft Learn)
    (["a.b.fabrikam.com"], "*.fabrikam.com", True),
    (["evilfabrikam.com"], "*.fabrikam.com", False),
    (["*.fabrikam.com"], "mail.fabrikam.com", True),         # a certificate wildcard covers one label
    (["*.fabrikam.com"], "fabrikam.com", False),
    (["MAIL.Fabrikam.com"], "mail.fabrikam.com.", True),
])
def test_the_connector_name_rule(names: list[str], reference: str, matches: bool) -> None:
    leaf = make_leaf(make_root("Name Rule Root"), names)
    assert certificate_name_matches(leaf.cert, reference) is matches


def test_the_subject_cn_counts_without_a_subject_alternative_name() -> None:
    # The connector compares "the Subject value" (RestrictDomainsToCertificate): a CN alone is enough there, where
    # Domain Security and RFC 9525 would look at the SAN only.
    from tests.pki import make_self_signed

    leaf = make_self_signed(["mail.fabrikam.com"], san=False)
    assert certificate_name_matches(leaf.cert, "*.fabrikam.com")


def test_the_catalogue_has_exchange_online_texts_only_where_microsoft_documents_them() -> None:
    online = {c.code: c.exchange_online_text for c in CATALOGUE.values() if c.exchange_online_text}
    assert online["name.connector-mismatch"] == online["name.domain-mismatch"] == SUBJECT_MISMATCH
    assert online["cert.expired"] == "450 4.7.320 Certificate validation failed"
    assert online["smtp.no-starttls"] == "450 4.4.317 Cannot connect to remote server"
    assert set(online.values()) <= set(EXCHANGE_ONLINE.values())
    # Our client certificate refused by a receiver: Exchange Online as a receiver documents no reply text.
    assert not any(code.startswith("peer.") for code in online)
