"""The terminal every CLI command prints to, and the one way it reports bad input."""

from __future__ import annotations

import os

import typer
from rich.console import Console

console = Console()


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on one line (never wrapped) and exit with ``code``; no traceback."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under taskset or a container)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
