"""Which cmdlets and parameters each Exchange target documents: the table ``certkit config exchange`` writes from.

Every command a generated script runs must be in :data:`CMDLETS` for its target, with each parameter it passes
(and, for parameters with a fixed set of values, the value); ``tests/test_config.py`` parses the generated
PowerShell and checks it against this table. Each entry cites the Microsoft Learn page it was taken from
(the ``online version`` of the page in MicrosoftDocs/office-docs-powershell, whose per-parameter
"Applicable:" lines say which Exchange versions have the parameter). Facts worth knowing, from those pages:

* ``Import-ExchangeCertificate -FileName`` exists only in Exchange 2013: the 2022 H1 Cumulative Updates removed
  it from Exchange 2016 and 2019 (it took UNC paths). Every target reads the file with ``-FileData
  ([System.IO.File]::ReadAllBytes('<path>'))``.
* ``-TlsCertificateName`` on Send and Receive connectors (``"<I>issuer<S>subject"``) exists from Exchange 2013.
* ``New-InboundConnector``/``New-OutboundConnector`` exist only in Exchange Online (and EOP); ``Set-TransportConfig``
  exists there too, but its domain-secure lists are on-premises parameters.
* With an Edge subscription, ``New-EdgeSubscription`` disables ``Set-SendConnector`` on the Edge, and EdgeSync
  replicates the Send connectors and "the list of send and receive domains used in domain secure communications"
  from Active Directory: both are set on a Mailbox (2010: Hub Transport) server. Receive connectors, certificates
  and the machine's root store stay the Edge's own (:data:`EDGE_SUBSCRIPTIONS_URL`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["CMDLETS", "EDGE_SUBSCRIPTIONS_URL", "SOURCES", "Cmdlet", "cmdlet"]

_PS = "https://learn.microsoft.com/powershell/module/exchangepowershell/"
#: What EdgeSync replicates, and which cmdlets the Edge subscription disables on the Edge.
EDGE_SUBSCRIPTIONS_URL = "https://learn.microsoft.com/exchange/architecture/edge-transport-servers/edge-subscriptions"


@dataclass(frozen=True)
class Cmdlet:
    """One documented command: its page, and its parameters (``None``: any value; else the documented values)."""

    name: str
    url: str
    parameters: Mapping[str, frozenset[str] | None] = field(default_factory=dict)

    def allows(self, parameter: str, value: str | None = None) -> bool:
        """Whether ``parameter`` (case-insensitive, as PowerShell reads it) is documented, with ``value`` if given."""
        for name, values in self.parameters.items():
            if name.lower() == parameter.lower():
                return value is None or values is None or value in values
        return False


def _c(name: str, url: str, *params: str, **values: tuple[str, ...]) -> Cmdlet:
    table: dict[str, frozenset[str] | None] = {p: None for p in params}
    table.update({p: frozenset(v) for p, v in values.items()})
    return Cmdlet(name, url, MappingProxyType(table))


_BOOL = ("$true", "$false")

# --- on-premises Exchange (Exchange Management Shell) ---------------------------------------------------------
_READ_HOST = _c("Read-Host", "https://learn.microsoft.com/powershell/module/microsoft.powershell.utility/read-host",
                "Prompt", "AsSecureString")
_FORMAT_LIST = _c("Format-List", "https://learn.microsoft.com/powershell/module/microsoft.powershell.utility/"
                  "format-list", "Property")
_GET_CHILD_ITEM = _c("Get-ChildItem", "https://learn.microsoft.com/powershell/module/microsoft.powershell.management/"
                     "get-childitem", "Path")
_IMPORT_EXCHANGE_CERTIFICATE = _c("Import-ExchangeCertificate", _PS + "import-exchangecertificate",
                                  "FileData", "Password", "PrivateKeyExportable", "Server", "FriendlyName")
_ENABLE_EXCHANGE_CERTIFICATE = _c("Enable-ExchangeCertificate", _PS + "enable-exchangecertificate",
                                  "Thumbprint", "Server", "Force", Services=("SMTP",))
_GET_EXCHANGE_CERTIFICATE = _c("Get-ExchangeCertificate", _PS + "get-exchangecertificate", "Thumbprint", "Server")
_SET_TRANSPORT_CONFIG = _c("Set-TransportConfig", _PS + "set-transportconfig",
                           "TLSSendDomainSecureList", "TLSReceiveDomainSecureList")
_GET_TRANSPORT_CONFIG = _c("Get-TransportConfig", _PS + "get-transportconfig", "Identity")
_SEND_2010 = ("Identity", "DNSRoutingEnabled", "SmartHosts", "TlsDomain")
_SEND_BOOLS = {"DomainSecureEnabled": _BOOL, "IgnoreSTARTTLS": _BOOL, "RequireTLS": _BOOL}
_GET_SEND_CONNECTOR = _c("Get-SendConnector", _PS + "get-sendconnector", "Identity")
_GET_QUEUE = _c("Get-Queue", _PS + "get-queue", "Identity", "Filter", "Server")
_TEST_EDGE_SYNC = _c("Test-EdgeSynchronization", _PS + "test-edgesynchronization", "ExcludeRecipientTest",
                     "TargetServer")
_START_EDGE_SYNC = _c("Start-EdgeSynchronization", _PS + "start-edgesynchronization", "Server", "TargetServer")
# Exchange 2010 runs on Windows Server 2008 (R2): no PKI module, so no Import-Certificate; certutil adds roots.
_CERTUTIL = _c("certutil", "https://learn.microsoft.com/windows-server/administration/windows-commands/certutil",
               "addstore")
_IMPORT_CERTIFICATE = _c("Import-Certificate", "https://learn.microsoft.com/powershell/module/pki/import-certificate",
                         "FilePath", CertStoreLocation=("Cert:\\LocalMachine\\Root",))
_AUTH = ("Tls", "ExchangeServer")

_ON_PREMISES = (_READ_HOST, _FORMAT_LIST, _GET_CHILD_ITEM, _IMPORT_EXCHANGE_CERTIFICATE, _ENABLE_EXCHANGE_CERTIFICATE,
                _GET_EXCHANGE_CERTIFICATE, _SET_TRANSPORT_CONFIG, _GET_TRANSPORT_CONFIG, _GET_SEND_CONNECTOR,
                _GET_QUEUE, _TEST_EDGE_SYNC, _START_EDGE_SYNC, _CERTUTIL)

_EXCHANGE_2010 = (*_ON_PREMISES,
                  _c("Set-SendConnector", _PS + "set-sendconnector", *_SEND_2010, **_SEND_BOOLS,
                     TlsAuthLevel=("EncryptionOnly", "CertificateValidation", "DomainValidation")),
                  _c("Set-ReceiveConnector", _PS + "set-receiveconnector", "Identity",
                     DomainSecureEnabled=_BOOL, AuthMechanism=_AUTH))
# 2013, 2016, 2019 and SE: -TlsCertificateName on both connectors, and the PKI module's Import-Certificate.
_EXCHANGE_2016 = (*_ON_PREMISES, _IMPORT_CERTIFICATE,
                  _c("Set-SendConnector", _PS + "set-sendconnector", *_SEND_2010, "TlsCertificateName", **_SEND_BOOLS,
                     TlsAuthLevel=("EncryptionOnly", "CertificateValidation", "DomainValidation")),
                  _c("Set-ReceiveConnector", _PS + "set-receiveconnector", "Identity", "TlsCertificateName",
                     DomainSecureEnabled=_BOOL, AuthMechanism=_AUTH))

# --- Exchange Online (Exchange Online PowerShell) ---------------------------------------------------------------
_EXCHANGE_ONLINE = (
    _FORMAT_LIST,
    _c("Connect-ExchangeOnline", _PS + "connect-exchangeonline", "UserPrincipalName"),
    _c("New-InboundConnector", _PS + "new-inboundconnector", "Name", "SenderDomains", "TlsSenderCertificateName",
       "Comment", ConnectorType=("Partner",), RequireTls=_BOOL, RestrictDomainsToCertificate=_BOOL,
       RestrictDomainsToIPAddresses=_BOOL),
    _c("New-OutboundConnector", _PS + "new-outboundconnector", "Name", "RecipientDomains", "TlsDomain",
       "SmartHosts", "Comment", ConnectorType=("Partner",), UseMXRecord=_BOOL,
       TlsSettings=("EncryptionOnly", "CertificateValidation", "DomainValidation")),
    _c("Get-InboundConnector", _PS + "get-inboundconnector", "Identity"),
    _c("Get-OutboundConnector", _PS + "get-outboundconnector", "Identity"),
    _c("Validate-OutboundConnector", _PS + "validate-outboundconnector", "Identity", "Recipients"),
)


def _index(cmdlets: tuple[Cmdlet, ...]) -> Mapping[str, Cmdlet]:
    return MappingProxyType({c.name: c for c in cmdlets})


#: target (``2010``, ``2016``: 2013 to SE, ``online``) -> command name -> :class:`Cmdlet`.
CMDLETS: Mapping[str, Mapping[str, Cmdlet]] = MappingProxyType({
    "2010": _index(_EXCHANGE_2010), "2016": _index(_EXCHANGE_2016), "online": _index(_EXCHANGE_ONLINE)})

#: The other Microsoft pages the scripts and the ``exchange-online`` rules rest on (docs/cli.md cites them).
SOURCES: Mapping[str, str] = MappingProxyType({
    "edge-subscriptions": EDGE_SUBSCRIPTIONS_URL,
    "partner-connectors": "https://learn.microsoft.com/exchange/mail-flow-best-practices/use-connectors-to-configure-"
                          "mail-flow/set-up-connectors-for-secure-mail-flow-with-a-partner",
    "mail-flow-intelligence": "https://learn.microsoft.com/defender-office-365/mail-flow-intelligence-in-office-365",
    "exchange-online-tls": "https://learn.microsoft.com/purview/exchange-online-uses-tls-to-secure-email-connections",
    "subject-mismatch": "https://learn.microsoft.com/archive/blogs/exchangechallengeaccepted/mail-not-routing-to-on-"
                        "premise-exchange-2013-environment-from-o365-with-450-4-7-320-certificate-validation-failed-"
                        "error",
})


def cmdlet(target: str, name: str) -> Cmdlet | None:
    """The documented command ``name`` for ``target`` (case-insensitive), or ``None``."""
    table = CMDLETS[target]
    return next((c for n, c in table.items() if n.lower() == name.lower()), None)
