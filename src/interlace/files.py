"""Writing files so that a kill or a full disk never leaves a half-written one behind.

``write_atomic`` writes run state through a rename; ``sha256_file`` fingerprints what was written,
so that a resumed run can tell it is reading the same bytes; ``writing`` turns a failed write (a
full disk, a read-only or forbidden directory) into one ``WriteError`` line, for the caller to
remove what it had half-written.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path


class WriteError(RuntimeError):
    """Writing a result or run state failed (a full disk, a read-only or forbidden directory);
    the message names what and why, and the half-written files are removed by the writer."""


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through ``<path>.<pid>.tmp`` and a rename (atomic on POSIX and
    Windows): a `--resume` never reads a half-written scores, plan or SLEB state file, and two
    processes writing one file (a study's table) never share a temporary name."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk keeps the previous file, and no partial one
        raise


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks (healing state can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_failure(error: BaseException) -> str | None:
    """Why a write failed, in a few words, when ``error`` is a failed write; else None.

    Any OSError counts (ENOSPC, EDQUOT, EROFS, EACCES, ...). safetensors 0.8 raises its own
    SafetensorError, not an OSError, for the same causes ("Error while serializing: I/O error: No
    space left on device (os error 28)"), so it is recognised by its message.
    """
    if isinstance(error, OSError):
        reason = error.strerror or str(error) or type(error).__name__
        return f"{reason} ({error.filename})" if error.filename else reason
    if type(error).__name__ == "SafetensorError" and "os error" in str(error):
        return str(error).rpartition("I/O error: ")[2].splitlines()[0]
    return None


# What the user can do about a failed write, by its cause.
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_LOCKED = {errno.EROFS, errno.EACCES, errno.EPERM}


@contextlib.contextmanager
def writing(what: str, elsewhere: str) -> Iterator[None]:
    """Raise ``WriteError("cannot write {what}: {reason}; {fix}, or {elsewhere}")`` for a write
    that fails inside, the fix chosen by the cause (free space, make it writable).

    Other errors pass unchanged. The caller removes what was half-written (it knows where).
    """
    try:
        yield
    except Exception as error:
        reason = write_failure(error)
        if reason is None:
            raise
        code = error.errno if isinstance(error, OSError) else _os_error_code(str(error))
        fix = "free some space on that disk" if code in _FULL else "make it writable" if code in _LOCKED else "check that disk"
        raise WriteError(f"cannot write {what}: {reason}; {fix}, or {elsewhere}") from None


def _os_error_code(message: str) -> int | None:
    """The errno in safetensors' "... (os error 28)"."""
    head, _, tail = message.rpartition("(os error ")
    digits = tail.split(")")[0]
    return int(digits) if head and digits.isdigit() else None
