"""Adapters at the edge: files and SQLite, TLS sockets, DNS, HTTP for CRLs, templates, certifi."""
