"""Checks against live endpoints: the STARTTLS probe and the pre-flight before Domain Security.

They live in this package (not as ``certkit.checks.probe`` / ``certkit.checks.preflight`` modules) so that the
library's entry points ``certkit.probe(...)`` and ``certkit.preflight(...)`` are always the
functions, whatever was imported first.
"""
