"""Writing run state so that a kill at any moment leaves either the old file or the new one."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through ``<path>.tmp`` and a rename (atomic on POSIX and Windows):
    a `--resume` never reads a half-written scores, plan or SLEB state file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
