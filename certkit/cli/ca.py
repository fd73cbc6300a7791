"""``certkit ca ...``, ``certkit selfsigned``, ``certkit inspect``."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
