"""The whole command tree with every lazily loaded command imported: what the documentation's CLI reference
(mkdocs-click, which reads a group's loaded commands) is generated from."""

from __future__ import annotations

import click

from edgekit.cli import cli

with click.Context(cli) as _context:
    for _name in cli.list_commands(_context):
        cli.get_command(_context, _name)
