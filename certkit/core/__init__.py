"""The pure core: certificates, profiles, keys and formats, issuance, lint, verification, findings.

Nothing here touches files, sockets, or the wall clock, and nothing imports :mod:`certkit.cli`.
"""
