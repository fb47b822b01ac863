"""Resumable healing state: atomic checkpoints and clean stops on SIGTERM / Ctrl-C (issue 7).

Reliability: the trainable weights, optimizer, scheduler and data position are saved atomically
every ``save_every`` optimizer steps; SIGTERM / Ctrl-C save and stop cleanly; a resumed run skips
the batches already consumed and ends with the same weights. ``heal.heal`` decides when to save and
stop; this module holds what is saved, how it is written and how a stop is requested.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


def snapshot(step: int, model: Any, optimizer: Any, scheduler: Any, **progress: Any) -> dict:
    """The state after ``step`` optimizer steps: trainable weights, optimizer, scheduler, CPU RNG.

    ``model`` is the unwrapped model; ``progress`` (losses, lrs, skipped, config) is stored as given.
    """
    return {
        "step": step,
        "trainable": {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        **progress,
    }


def restore(state: dict, model: Any, optimizer: Any, scheduler: Any) -> None:
    """Load a ``snapshot`` back into the unwrapped ``model``, ``optimizer``, ``scheduler`` and the CPU RNG."""
    named = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["trainable"].items():
            named[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])


def save_checkpoint(state: dict, directory: Path) -> None:
    """Write a checkpoint as directory/latest via a temp dir and a rename.

    A crash at any point leaves either the previous ``latest`` or the new one, never a partial one.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "latest.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save(state, tmp / "state.pt")
    (tmp / "meta.json").write_text(json.dumps({"step": state["step"], "time": time.time()}))
    final = directory / "latest"
    old = directory / "latest.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(directory: Path) -> dict | None:
    """The state in directory/latest, or None when there is none."""
    path = Path(directory) / "latest" / "state.pt"
    return torch.load(path, weights_only=False) if path.exists() else None


@dataclass
class StopRequest:
    """The signal that asked the run to stop, or None while none has arrived."""

    signal: int | None = None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Turn SIGTERM / Ctrl-C into a recorded request, so the loop saves and stops at a step boundary.

    The previous handlers are put back on exit, however the block ends.
    """
    stop = StopRequest()

    def on_signal(signum: int, frame: Any) -> None:
        stop.signal = signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
