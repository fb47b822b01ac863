"""The terminal every CLI command prints to, and the one way it reports bad input."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape


def plain_width() -> int | None:
    """The width to render at where no terminal tells it: 120 columns unless ``COLUMNS`` or
    ``TERMINAL_WIDTH`` says otherwise; None (ask the terminal) on a terminal.

    rich falls back to 80 columns without a terminal, which cut help texts and table cells
    (a URL in `interlace methods`) in logs, CI and scripts that read the output.
    """
    if os.environ.get("COLUMNS") or os.environ.get("TERMINAL_WIDTH") or sys.stdout.isatty():
        return None
    return 120


console = Console(width=plain_width())

# An error line is read by a person: a message built from hostile input (a 4 MB YAML value, a
# 4096-character path) is cut here, keeping its start, which names the problem.
MAX_ERROR_CHARS = 500


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on one line (never wrapped) and exit with ``code``; no traceback.

    The message is printed as plain text (a path with ``[brackets]`` is not rich markup) and cut
    to MAX_ERROR_CHARS characters, the cut said.
    """
    message = " ".join(str(message).splitlines())  # one line, whatever the message holds
    if len(message) > MAX_ERROR_CHARS:
        message = f"{message[:MAX_ERROR_CHARS]}... ({len(message) - MAX_ERROR_CHARS} more characters)"
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def check_json_path(path: Path | None, flag: str = "--json") -> None:
    """Fail now, before any work, when the results could not be written to ``path`` at the end:
    a missing or read-only directory, a directory in its place, a read-only file, a name too long."""
    if path is None:
        return
    from interlace.config import path_problems

    problems = path_problems(path, flag) or _target_problems(path, flag)
    if problems:
        fail("; ".join(problems))


def _target_problems(path: Path, flag: str) -> list[str]:
    parent = path.expanduser().absolute().parent
    if path.is_dir():
        return [f"{flag} {path} is a directory; pass a file path such as {path / 'results.json'}"]
    if not parent.is_dir():
        return [f"{flag} {path}: the directory {parent} does not exist; create it or pass another {flag}"]
    if path.exists() and not os.access(path, os.W_OK):
        return [f"{flag} {path} is not writable; pass another {flag}"]
    if not path.exists() and not os.access(parent, os.W_OK | os.X_OK):
        return [f"{flag} {path}: the directory {parent} is not writable; pass another {flag}"]
    return []


def tolerate_any_encoding() -> None:
    """Print characters the terminal cannot encode as "?" instead of crashing.

    Under ``PYTHONIOENCODING=ascii`` (or a C locale) a path, model name or answer with a
    non-ASCII character would raise UnicodeEncodeError after the work is done, as a traceback.
    """
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under taskset or a container)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_threads(threads: int, flag: str = "--threads") -> None:
    """Fail when ``threads`` is not in 0..the CPU cores here (0: torch's default); checked before
    torch runs with it, as a huge count crashes the import of its thread pools."""
    if not 0 <= threads <= cpu_cores():
        fail(f"{flag} must be in 0..{cpu_cores()} (the CPU cores here; 0: torch's default), got {threads}")
