"""The terminal every CLI command prints to, and the one way it reports bad input."""

from __future__ import annotations

import typer
from rich.console import Console

console = Console()


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on one line (never wrapped) and exit with ``code``; no traceback."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)
