# certkit: Domain Security (mutual TLS) with fabrikam.com -- Exchange 2013, 2016, 2019 or Subscription Edition
# Run in the Exchange Management Shell, as an administrator, on the Edge Transport server
# (or the Mailbox/Hub Transport server that sends to the Internet). Review each line before running it.
# Our transport certificate: CN=edge.contoso.com, thumbprint <SHA1>, valid until <TIME>.

# --- 1. Our certificate --------------------------------------------------------------------------
# Ask for the PFX password; it is never written into this script.
$pfxPassword = Read-Host -Prompt "Password of edge.pfx" -AsSecureString
# Import the PFX with its private key. From Exchange 2013, -FileName takes the path (a UNC path: \\server\share\file.pfx).
Import-ExchangeCertificate -FileName "C:\certkit\edge.pfx" -Password $pfxPassword
# Use the certificate for SMTP (its SHA-1 thumbprint); answer Yes if asked to replace the default SMTP certificate.
Enable-ExchangeCertificate -Thumbprint <SHA1> -Services SMTP

# --- 2. The domain-secure lists: ADD the partner, keep every existing entry ---------------------------
# Send to fabrikam.com only over mutual TLS (no wildcards in this list).
Set-TransportConfig -TLSSendDomainSecureList @{Add="fabrikam.com"}
# Accept mail from fabrikam.com only over mutual TLS.
Set-TransportConfig -TLSReceiveDomainSecureList @{Add="fabrikam.com"}

# --- 3. The connectors ---------------------------------------------------------------------------
# Domain Security on the Send connector: it must route through DNS (MX) -- a smart host cannot -- and use STARTTLS.
Set-SendConnector -Identity "EdgeSync - Default-First-Site-Name to Internet" -DomainSecureEnabled $true -DNSRoutingEnabled $true -IgnoreSTARTTLS $false
# Domain Security on the Receive connector; it requires TLS as an authentication mechanism. Keep ExchangeServer:
# with an Edge subscription, EdgeSync's Hub-to-Edge connection authenticates with it (the Edge default is "Tls, ExchangeServer").
Set-ReceiveConnector -Identity "Default internal receive connector $env:COMPUTERNAME" -DomainSecureEnabled $true -AuthMechanism Tls, ExchangeServer

# --- 4. Trust the partner's root ---------------------------------------------------------------------
# CN=Fabrikam Root,O=Fabrikam, SHA-1 thumbprint <SHA1>: check it with the partner by phone before importing.
# Add the root to the machine's Trusted Root Certification Authorities store.
Import-Certificate -FilePath "C:\certkit\fabrikam.com-root.cer" -CertStoreLocation Cert:\LocalMachine\Root
# Show the imported root (it must be listed with the thumbprint above).
Get-ChildItem -Path Cert:\LocalMachine\Root\<SHA1>

# --- Checks --------------------------------------------------------------------------------------
# Our certificate must show Services SMTP and Status Valid.
Get-ExchangeCertificate -Thumbprint <SHA1> | Format-List Thumbprint,Services,Status,NotAfter
# Both lists must now contain fabrikam.com next to the entries that were there before.
Get-TransportConfig | Format-List TLSSendDomainSecureList,TLSReceiveDomainSecureList
# Edge subscription: run this on a Mailbox server (Hub Transport server in 2010), NOT on the Edge; EdgeSync must be in sync.
Test-EdgeSynchronization
# After sending a test message: the queue to fabrikam.com must not show a LastError such as "454 4.7.5 Certificate validation failure".
Get-Queue | Format-List NextHopDomain,Status,LastError
