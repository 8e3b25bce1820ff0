"""The rich Console the command line prints to, shared by cli.py and refresh_cli.py (here, not in cli.py: cli.py
imports refresh_cli.py, which would otherwise import it back)."""

from __future__ import annotations

from rich.console import Console

# Wide enough for the segment summary when output is not a terminal (make demo | tee, CI logs).
console = Console(width=None if Console().is_terminal else 160)
