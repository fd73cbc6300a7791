"""``certkit trust ...`` (the trust-store issue fills this in)."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
