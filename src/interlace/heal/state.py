"""Resumable healing state: atomic checkpoints and clean stops on SIGTERM / Ctrl-C.

Reliability: the trainable weights, optimizer, scheduler and data position are saved atomically
every ``save_every`` optimizer steps; SIGTERM / Ctrl-C save and stop cleanly; a resumed run skips
the batches already consumed and ends with the same weights. ``heal.heal`` decides when to save and
stop; this module holds what is saved, how it is written and how a stop is requested.

A checkpoint is safetensors plus JSON, fingerprinted, so loading one never runs code from the file
and a truncated, replaced or foreign one is refused (``checkpoint_problem``).
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
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from interlace.files import sha256_file, write_atomic, writing


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
    """Load a ``snapshot`` back into the unwrapped ``model``, ``optimizer``, ``scheduler`` and the CPU RNG.

    Raises:
        CheckpointError: the state trains other parameters, or other shapes, than ``model`` does.
    """
    named = dict(model.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    saved = state["trainable"]
    if set(saved) != trainable or any(saved[n].shape != named[n].shape for n in trainable):
        odd = sorted(set(saved) ^ trainable) or [n for n in sorted(trainable) if saved[n].shape != named[n].shape]
        raise CheckpointError(f"the healing checkpoint does not fit this model's trainable parameters (e.g. {odd[0]}): it belongs to another run")
    with torch.no_grad():
        for name, value in state["trainable"].items():
            named[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])


# A checkpoint is directory/latest/: the tensors in a safetensors file, everything else in JSON,
# and meta.json with the step, the SHA-256 of both files and the run it belongs to. Nothing in it is
# ever unpickled, so a crafted checkpoint cannot run code (torch.load(weights_only=False) could).
FORMAT = 2
TENSORS, SKELETON, META, RUN = "state.safetensors", "state.json", "meta.json", "run.json"
_TAGS = ("__tensor__", "__tuple__", "__dict__")


class CheckpointError(ValueError):
    """A healing checkpoint that is damaged, foreign, or written by another version."""


def bind(directory: Path, run: str) -> None:
    """Record that checkpoints in ``directory`` belong to ``run`` (``interlace.run_dir.run_id``):
    each one saved from now on carries it, and a resume checks it."""
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / RUN, json.dumps({"run": run}))


def save_checkpoint(state: dict, directory: Path) -> None:
    """Write a checkpoint as directory/latest via a temp dir and renames.

    A crash at any point leaves the previous ``latest`` (or, between the two renames,
    ``latest.old``, which ``load_checkpoint`` falls back to) or the new one, never a partial one.

    Raises:
        WriteError: the disk is full or the directory read-only; nothing partial is left and the
            previous checkpoint is kept.
    """
    directory = Path(directory)
    tmp = directory / "latest.tmp"
    try:
        with writing(f"the healing checkpoint in {directory}", "pass an --out on another disk"):
            directory.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            tensors: dict[str, torch.Tensor] = {}
            skeleton = _split(state, "", tensors)
            save_file(tensors, tmp / TENSORS)
            (tmp / SKELETON).write_text(json.dumps(skeleton))
            meta = {
                "format": FORMAT, "step": state["step"], "time": time.time(), "run": _bound_run(directory),
                "sha256": {name: sha256_file(tmp / name) for name in (TENSORS, SKELETON)},
            }  # fmt: skip
            (tmp / META).write_text(json.dumps(meta))
            final, old = directory / "latest", directory / "latest.old"
            shutil.rmtree(old, ignore_errors=True)
            if final.exists():
                final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a partial state would keep the full disk full
        raise


def has_checkpoint(directory: Path) -> bool:
    """Whether ``directory`` holds a checkpoint (whole or not) that a resume would read."""
    return _latest(Path(directory)) is not None


def checkpoint_problem(directory: Path, run: str | None = None) -> str | None:
    """Why the checkpoint in ``directory`` cannot be loaded, or None when it can.

    Args:
        directory: the checkpoint directory (holding ``latest/``).
        run: the run it must belong to (``interlace.run_dir.run_id``); None: any run.
    """
    latest = _latest(Path(directory))
    if latest is None:
        return f"{directory} holds no checkpoint"
    try:
        meta = json.loads((latest / META).read_text())
    except (OSError, ValueError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("sha256"), dict):
        return f"the healing checkpoint {latest} was written by another interlace version or is damaged (its {META})"
    for name in (TENSORS, SKELETON):
        if not (latest / name).is_file() or sha256_file(latest / name) != meta["sha256"].get(name):
            return f"the healing checkpoint {latest} is damaged: {name} is missing, truncated or replaced (its SHA-256 differs from the one recorded)"
    if run is not None and meta.get("run") != run:
        return f"the healing checkpoint {latest} belongs to another run (another config or plan)"
    try:  # whole files with matching fingerprints can still be foreign: read the headers (cheap)
        json.loads((latest / SKELETON).read_text())
        with safe_open(latest / TENSORS, framework="pt") as handle:
            handle.keys()
    except Exception as error:  # noqa: BLE001 (safetensors raises its own SafetensorError)
        return f"the healing checkpoint {latest} does not hold a healing state ({str(error).splitlines()[0][:200]})"
    return None


def load_checkpoint(directory: Path) -> dict | None:
    """The state in directory/latest, or None when there is none.

    Raises:
        CheckpointError: the checkpoint is damaged, foreign to the run bound to ``directory``, or
            written by another version.
    """
    directory = Path(directory)
    latest = _latest(directory)
    if latest is None:
        return None
    problem = checkpoint_problem(directory, run=_bound_run(directory))
    if problem:
        raise CheckpointError(problem)
    try:
        return _join(json.loads((latest / SKELETON).read_text()), load_file(latest / TENSORS))
    except Exception as error:  # noqa: BLE001 (a missing tensor, a bad tag, SafetensorError)
        raise CheckpointError(f"the healing checkpoint {latest} does not hold a healing state ({error!r:.200})") from None


def _latest(directory: Path) -> Path | None:
    for name in ("latest", "latest.old"):  # latest.old: a crash between the two renames of a save
        if (directory / name).is_dir():
            return directory / name
    return None


def _bound_run(directory: Path) -> str | None:
    try:
        return json.loads((directory / RUN).read_text())["run"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _split(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` as JSON, its tensors moved into ``tensors`` under their path ("optimizer/state/0/exp_avg").

    Tuples, and dicts with keys other than strings (the optimizer's parameter indices), are tagged
    so that ``_join`` gives back exactly what was saved.
    """
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous()
        return {"__tensor__": path}
    if isinstance(value, tuple):
        return {"__tuple__": [_split(v, _child(path, i), tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_split(v, _child(path, i), tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        items = [[k, _split(v, _child(path, k), tensors)] for k, v in value.items()]
        if all(isinstance(k, str) for k in value) and not set(value) & set(_TAGS):
            return dict(items)
        return {"__dict__": items}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} at {path or 'the top'} of a healing checkpoint")


def _child(path: str, key: Any) -> str:
    return f"{path}/{key}" if path else str(key)


def _join(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of ``_split``."""
    if isinstance(value, list):
        return [_join(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1 and (tag := next(iter(value))) in _TAGS:
        body = value[tag]
        if tag == "__tensor__":
            return tensors[body]
        if tag == "__tuple__":
            return tuple(_join(v, tensors) for v in body)
        return {k: _join(v, tensors) for k, v in body}
    return {k: _join(v, tensors) for k, v in value.items()}


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
