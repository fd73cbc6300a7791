# certkit: certificate-based mail flow with the partner fabrikam.com -- Exchange Online
# Exchange Online PowerShell (the ExchangeOnlineManagement module), as an Exchange administrator. Each command says
# where it runs ("# Run in:"). Review each line before running it.
# Exchange Online presents Microsoft's own certificate (CN=mail.protection.outlook.com): there is no certificate to
# import and no root to trust here. Its connectors accept only certificates issued by a trusted (public) CA, and a
# private root cannot be added to Exchange Online: fabrikam.com's servers must present a public CA's certificate
# that names *.fabrikam.com (subject CN or subjectAltName).

# --- 1. Connect ----------------------------------------------------------------------------------
# Run in: Exchange Online PowerShell (Connect-ExchangeOnline)
Connect-ExchangeOnline

# --- 2. Mail from fabrikam.com: only over TLS, only from a server whose certificate names *.fabrikam.com ---
# TlsSenderCertificateName is matched against the certificate's subject or subjectAltName; "*.DOMAIN" stands for the
# domain and every host within it. Mail from fabrikam.com that does not meet this is rejected.
# Run in: Exchange Online PowerShell (Connect-ExchangeOnline)
New-InboundConnector -Name "certkit: from fabrikam.com" -ConnectorType Partner -SenderDomains "fabrikam.com" -RequireTls $true -RestrictDomainsToCertificate $true -TlsSenderCertificateName "*.fabrikam.com"

# --- 3. Mail to fabrikam.com: only over TLS, to a server whose certificate is valid and names *.fabrikam.com ---
# DomainValidation: chain and revocation lists are checked, and the certificate's name must match TlsDomain; when it
# does not, the mail stays queued with "450 4.7.320 Certificate validation failed" (message trace: MSG=SubjectMismatch).
# Run in: Exchange Online PowerShell (Connect-ExchangeOnline)
New-OutboundConnector -Name "certkit: to fabrikam.com" -ConnectorType Partner -RecipientDomains "fabrikam.com" -UseMXRecord $true -TlsSettings DomainValidation -TlsDomain "*.fabrikam.com"

# --- Checks --------------------------------------------------------------------------------------
# Run in: Exchange Online PowerShell (Connect-ExchangeOnline)
Get-InboundConnector -Identity "certkit: from fabrikam.com" | Format-List Name,ConnectorType,SenderDomains,RequireTls,RestrictDomainsToCertificate,TlsSenderCertificateName
# Run in: Exchange Online PowerShell (Connect-ExchangeOnline)
Get-OutboundConnector -Identity "certkit: to fabrikam.com" | Format-List Name,ConnectorType,RecipientDomains,UseMXRecord,TlsSettings,TlsDomain
# Sends a test message through the outbound connector; a certificate problem shows as 4.7.320.
# Run in: Exchange Online PowerShell (Connect-ExchangeOnline)
Validate-OutboundConnector -Identity "certkit: to fabrikam.com" -Recipients "postmaster@fabrikam.com"

# --- Our side, for fabrikam.com -----------------------------------------------------------------
# fabrikam.com's servers see Microsoft's certificate, not one naming our domain: their rule for our domain must accept
# it (Exchange Domain Security's name rule for our domain cannot be met from Exchange Online). If our mail to
# fabrikam.com leaves through our own Exchange servers instead (hybrid, centralized mail transport), configure those
# with: certkit config exchange --target 2016.
