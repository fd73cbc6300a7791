# certkit: Domain Security (mutual TLS) with fabrikam.com -- Exchange 2010
# Exchange Management Shell, as an administrator. Each command says where it runs ("# Run on:").
# With an Edge subscription, organisation settings -- the domain-secure lists and the EdgeSync Send connector -- are
# made on a Hub Transport server and EdgeSync replicates them to the Edge (the Edge refuses Set-SendConnector); our
# certificate, the partner's root and the Internet-facing Receive connector are the Edge's own.
# Review each line before running it.
# Our transport certificate: CN=edge.contoso.com, thumbprint <SHA1>, valid until <TIME>.

# --- 0. Copy these files to C:\certkit on the Edge Transport server first ---------------------------------
#   C:\certkit\edge.pfx  our transport certificate with its private key (PFX)
#   C:\certkit\fabrikam.com-root.cer  fabrikam.com's root certificate

# --- 1. Our certificate --------------------------------------------------------------------------
# Ask for the PFX password; it is never written into this script.
# Run on: Edge Transport server
$pfxPassword = Read-Host -Prompt "Password of edge.pfx" -AsSecureString
# Import the PFX with its private key. -FileData takes the file's bytes (Exchange 2010 has no -FileName).
# Run on: Edge Transport server
Import-ExchangeCertificate -FileData ([System.IO.File]::ReadAllBytes("C:\certkit\edge.pfx")) -Password $pfxPassword
# Use the certificate for SMTP (its SHA-1 thumbprint); answer Yes if asked to replace the default SMTP certificate.
# Run on: Edge Transport server
Enable-ExchangeCertificate -Thumbprint <SHA1> -Services SMTP

# --- 2. The domain-secure lists: ADD the partner, keep every existing entry ---------------------------
# Send to fabrikam.com only over mutual TLS (no wildcards in this list).
# Run on: Hub Transport server (replicated to the Edge by EdgeSync)
Set-TransportConfig -TLSSendDomainSecureList @{Add="fabrikam.com"}
# Accept mail from fabrikam.com only over mutual TLS.
# Run on: Hub Transport server (replicated to the Edge by EdgeSync)
Set-TransportConfig -TLSReceiveDomainSecureList @{Add="fabrikam.com"}

# --- 3. The connectors ---------------------------------------------------------------------------
# Domain Security on the Send connector: it must route through DNS (MX) -- a smart host cannot -- and use STARTTLS.
# Run on: Hub Transport server (replicated to the Edge by EdgeSync)
Set-SendConnector -Identity "EdgeSync - Default-First-Site-Name to Internet" -DomainSecureEnabled $true -DNSRoutingEnabled $true -IgnoreSTARTTLS $false
# Domain Security on the Edge's Internet-facing Receive connector; it requires TLS as an authentication mechanism. Keep
# ExchangeServer: EdgeSync's Hub-to-Edge connection authenticates with it (the Edge default is "Tls, ExchangeServer").
# Run on: Edge Transport server
Set-ReceiveConnector -Identity "Default internal receive connector $env:COMPUTERNAME" -DomainSecureEnabled $true -AuthMechanism Tls, ExchangeServer

# --- 4. Trust the partner's root ---------------------------------------------------------------------
# CN=Fabrikam Root,O=Fabrikam, SHA-1 thumbprint <SHA1>: check it with the partner by phone before importing.
# Windows Server 2008 R2 has no Import-Certificate: certutil adds the root to the machine's Trusted Root store.
# Run on: Edge Transport server
certutil -addstore Root "C:\certkit\fabrikam.com-root.cer"
# Show the imported root (it must be listed with the thumbprint above).
# Run on: Edge Transport server
Get-ChildItem -Path Cert:\LocalMachine\Root\<SHA1>

# --- Checks --------------------------------------------------------------------------------------
# Our certificate must show Services SMTP and Status Valid.
# Run on: Edge Transport server
Get-ExchangeCertificate -Thumbprint <SHA1> | Format-List Thumbprint,Services,Status,NotAfter
# Both lists must now contain fabrikam.com next to the entries that were there before.
# Run on: Hub Transport server (replicated to the Edge by EdgeSync)
Get-TransportConfig | Format-List TLSSendDomainSecureList,TLSReceiveDomainSecureList
# Replicate the changes to the Edge now rather than at the next scheduled synchronization, then check it.
# Run on: Hub Transport server (replicated to the Edge by EdgeSync)
Start-EdgeSynchronization
# Edge subscription: run this on a Hub Transport server, NOT on the Edge; EdgeSync must be in sync.
# Run on: Hub Transport server (replicated to the Edge by EdgeSync)
Test-EdgeSynchronization
# The Edge's copy of the Send connector must show DomainSecureEnabled True (replicated from the Hub Transport server).
# Run on: Edge Transport server
Get-SendConnector -Identity "EdgeSync - Default-First-Site-Name to Internet" | Format-List Name,DomainSecureEnabled,DNSRoutingEnabled,IgnoreSTARTTLS
# After sending a test message: the queue to fabrikam.com must not show a LastError such as "454 4.7.5 Certificate validation failure".
# Run on: Edge Transport server
Get-Queue | Format-List NextHopDomain,Status,LastError
