"""The directories a `prune` run writes, the rules that keep it off everything else, and the seals
that let ``--resume`` trust what it reads back.

A run writes two places beside each other, named from ``--out`` with symbolic links resolved
first: ``<out>``, the verified result, and ``<out>.work``, its state (config, scores, plan, healing
checkpoints) with ``result/``, where the next ``<out>`` is assembled and verified before it is
renamed into place. The rules (README, "Reliability"):

- ``--out`` may not be, contain or lie inside the model's directory or a ``--data`` directory, and
  may not be or contain a ``--data`` file's directory or the current directory.
- An existing, non-empty ``--out`` is replaced only with ``--overwrite``, and only when it holds an
  interlace result (its ``interlace_manifest.json``); anything else is refused, whatever the flags.
- ``<out>.work`` is resumed only when an interlace run made it (its ``.lock`` or ``config.json``),
  deleted only when it holds the ``.lock`` every run creates first, and never when it is a
  symbolic link.
- An old result is renamed aside before the new one is renamed in and deleted last, so a crash
  leaves one of the two on disk.

Each file a run writes into ``<out>.work`` is sealed with its SHA-256 in ``seals.json``; a healing
checkpoint records the run it belongs to (``run_id``: the seals of the config and the plan).
``--resume`` refuses a work directory whose files do not match their seals.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeVar

from interlace.files import sha256_file, write_atomic

MANIFEST = "interlace_manifest.json"
SEALS = "seals.json"
START_OVER = "pass --overwrite instead of --resume to start over"
T = TypeVar("T")


@dataclass(frozen=True)
class RunDirs:
    """Where a run writes, all absolute with symbolic links resolved.

    Attributes:
        out: the result directory (``--out``).
        work: the run's state, ``<out>.work``, beside ``out``.
        result: where the next result is assembled and verified, inside ``work``.
        previous: where an old result waits while the new one is renamed in, inside ``work``.
    """

    out: Path
    work: Path
    result: Path
    previous: Path


def run_dirs(out: str | Path) -> RunDirs:
    """The directories of a run writing to ``out`` (symbolic links in ``out`` resolved)."""
    real = Path(out).expanduser().resolve()
    work = Path(f"{real}.work")
    return RunDirs(real, work, work / "result", work / "previous")


def is_result(path: Path) -> bool:
    """Whether ``path`` holds an interlace result (the manifest every `prune` writes last)."""
    return (path / MANIFEST).is_file()


def is_work_dir(path: Path, *, to_delete: bool = False) -> bool:
    """Whether ``path`` is an interlace run's state: empty, or holding its lock or config.

    To be deleted (``--overwrite``) it must hold the lock file every run creates first: a
    ``config.json`` alone could be a model's.
    """
    if not any(path.iterdir()) or (path / ".lock").exists():
        return True
    return not to_delete and (path / "config.json").is_file()


class Protected(NamedTuple):
    """A directory a run's output may not replace.

    Attributes:
        what: how an error line names it ("the model's directory").
        path: the directory, resolved.
        nor_inside: --out may not lie inside it either (a model's or a data directory, whose files
            the run reads; an output inside the current directory or beside a data file is fine).
    """

    what: str
    path: Path
    nor_inside: bool


def protected_dirs(model: str | None, data: str | None) -> list[Protected]:
    """The current directory, the model's directory and the data's place (a data file's images
    lie under its directory), for the model argument and ``--data`` spec given."""
    from interlace.data import sources
    from interlace.loading import resolve

    places = [Protected("the current directory", Path.cwd().resolve(), False)]
    try:
        source = Path(resolve(model))
        if source.is_dir():
            places.append(Protected("the model's directory", source.resolve(), True))
    except (ValueError, OSError):  # reported by validate's model check
        pass
    try:
        spec = sources.parse_data_spec(data or "embedded", peek_rows=0)
    except (ValueError, OSError):  # reported by validate's data check
        spec = None
    if spec is not None and spec.path is not None:
        path = spec.path.expanduser().resolve()
        if path.is_dir():
            places.append(Protected("the --data directory", path, True))
        else:
            places.append(Protected("the directory of the --data file", path.parent, False))
    return places


def out_problems(out: str | Path, *, overwrite: bool, resume: bool, model: str | None, data: str | None) -> list[str]:
    """What forbids writing a run's result to ``out`` (README, "Reliability"); empty when nothing.

    Args:
        out: ``--out`` as given.
        overwrite: ``--overwrite``: replace an earlier interlace result and discard its state.
        resume: ``--resume``: continue the run kept in ``<out>.work``.
        model: the model argument (its directory is protected).
        data: the ``--data`` spec (a local file's or directory's place is protected).
    """
    try:
        dirs = run_dirs(out)
    except (OSError, RuntimeError) as error:  # a loop of symbolic links (RuntimeError before Python 3.13)
        return [f"--out {out} cannot be resolved ({error}); pass another --out"]
    shown = f"--out {out}" + (f" (a link to {dirs.out})" if Path(out).expanduser().is_symlink() else "")
    problems = []
    for what, place, nor_inside in protected_dirs(model, data):
        if dirs.out == place:
            problems.append(f"{shown} is {what}; a run replaces its --out, so pass a new directory")
        elif place.is_relative_to(dirs.out):
            problems.append(f"{shown} contains {what} ({place}); a run replaces its --out, so pass a new directory")
        elif nor_inside and dirs.out.is_relative_to(place):
            problems.append(f"{shown} lies inside {what} ({place}); write the result elsewhere")
        elif dirs.work == place or place.is_relative_to(dirs.work):
            problems.append(f"{shown} keeps its run state in {dirs.work}, which is or contains {what}; pass another --out")
    if problems:
        return problems
    if dirs.out.exists():
        problems += _existing_out_problems(dirs.out, shown, overwrite)
    else:
        parent = next((p for p in dirs.out.parents if p.exists()), None)
        if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK):
            problems.append(f"--out {out} cannot be created: {parent} is not a writable directory; pass another --out")
    work = dirs.work
    if work.is_symlink() or (work.exists() and not work.is_dir()):
        kind = "a symbolic link" if work.is_symlink() else "a file"
        problems.append(f"{work} is {kind}; a run keeps its state in a directory there: move it away or pass another --out")
    elif work.exists() and not is_work_dir(work, to_delete=overwrite and not resume):
        what = "no .lock, which every run creates, so --overwrite never deletes it" if is_work_dir(work) else "no .lock or config.json"
        problems.append(f"{work} holds files that are not an interlace run's state ({what}); move it away or pass another --out")
    elif resume and not work.is_dir():
        problems.append(f"--resume found no interrupted run in {work}; drop --resume to start fresh")
    elif work.exists() and not resume and not overwrite:
        problems.append(
            f"{work} holds an unfinished run of --out {out} (interrupted, failed while healing, or still running); "
            f"pass --resume to continue it, or --overwrite to discard it"
        )
    return problems


def _existing_out_problems(out: Path, shown: str, overwrite: bool) -> list[str]:
    if not out.is_dir():
        return [f"{shown} is a file; pass a directory path"]
    try:
        empty = not any(out.iterdir())
    except OSError as error:
        return [f"{shown} cannot be listed ({error.strerror}); pass another --out"]
    if empty:
        return []
    if not is_result(out):
        return [
            f"{shown} exists and holds files that are not an interlace result (no {MANIFEST}), which --overwrite "
            "never replaces; pass a new or empty --out, or move those files away yourself"
        ]
    if not overwrite:
        return [f"{shown} exists and holds an earlier interlace result; pass --overwrite to replace it"]
    return []


def replace_dir(new: Path, dst: Path, aside: Path) -> None:
    """Rename ``new`` to ``dst``. An existing ``dst`` is first renamed to ``aside`` (same
    filesystem) and deleted last: a crash at any moment leaves the old or the new directory."""
    if dst.exists():
        shutil.rmtree(aside, ignore_errors=True)
        dst.rename(aside)
    new.rename(dst)
    shutil.rmtree(aside, ignore_errors=True)


# -- seals -------------------------------------------------------------------------------------


def seal(work: Path, name: str) -> None:
    """Record the SHA-256 of ``work/name`` as just written (after an atomic write of it)."""
    seals = _read_seals(work) or {}
    seals[name] = sha256_file(work / name)
    write_atomic(work / SEALS, json.dumps(seals, indent=2, sort_keys=True) + "\n")


def sealed(work: Path, name: str) -> bool:
    """Whether ``work/name`` exists and holds the bytes its seal records.

    A file without a seal (a kill between writing and sealing it) counts as not written.
    """
    seals = _read_seals(work) or {}
    return name in seals and (work / name).is_file() and sha256_file(work / name) == seals[name]


def run_id(work: Path) -> str:
    """The identity of a run's config and plan (their seals), recorded in its healing checkpoints."""
    import hashlib

    seals = _read_seals(work) or {}
    return hashlib.sha256(f"{seals.get('config.json')}:{seals.get('plan.json')}".encode()).hexdigest()


def _read_seals(work: Path) -> dict[str, str] | None:
    """The seals, or None when the file is missing or is not a mapping of names to digests."""
    try:
        seals = json.loads((work / SEALS).read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(seals, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in seals.items())
    return seals if ok else None


def resume_problems(work: Path) -> list[str]:
    """Why the state in ``work`` cannot be trusted by ``--resume``; empty when it can.

    Every sealed file must hold the bytes it was written with, the config must be among them, and
    a healing checkpoint must be whole and belong to this config and plan.
    """
    from interlace.heal import state as heal_state

    if not (work / "config.json").is_file():
        return [f"--resume: {work} has no config.json (the options of the run it holds), so it cannot be checked against this run; {START_OVER}"]
    seals = _read_seals(work)
    if seals is None or "config.json" not in seals:
        return [f"--resume: {work} has no readable {SEALS} (it was written by another interlace version, or damaged); {START_OVER}"]
    changed = [name for name in sorted(seals) if (work / name).is_file() and sha256_file(work / name) != seals[name]]
    missing = [name for name in sorted(seals) if not (work / name).is_file()]
    problems = []
    if changed or missing:
        what = ", ".join([*(f"{n} was changed" for n in changed), *(f"{n} is missing" for n in missing)])
        problems.append(f"--resume: in {work}, {what} since the run wrote it; {START_OVER}")
    heal = work / "heal"
    if not problems and heal_state.has_checkpoint(heal):
        problem = heal_state.checkpoint_problem(heal, run=run_id(work))
        if problem:
            problems.append(f"--resume: {problem}; {START_OVER}")
    return problems


# -- one run -------------------------------------------------------------------------------------

# In <out>.work: the finished steps of a selection that runs long (SLEB), so an interrupted one goes on.
SELECT_STATE = "select_state.json"


class Run:
    """The run directory of one ``prune``, seen through what the stages need from it.

    ``Run.open`` claims ``<out>.work`` (locked for the life of the process, its ``config.json``
    written and sealed), turns SIGTERM into ``KeyboardInterrupt``, and on any failure leaves what the
    README's "Reliability" section promises: nothing when healing had not started (a resumed
    ``<out>.work`` as it was), a resumable ``<out>.work`` with a note naming how to go on when it
    had, and never a half-assembled result. In between, ``stage`` loads a stage's result that a
    ``--resume`` finds sealed, or computes, writes and seals it; ``result`` is where the next
    ``<out>`` is assembled; ``publish`` renames it into place.

    Under ``accelerate launch`` every process holds a Run; only the main one writes.
    """

    def __init__(self, out: str | Path, resume: bool, main: bool = True):
        self.dirs = run_dirs(out)
        self.resume, self.main = resume, main
        self.healing_started = False

    @property
    def work(self) -> Path:
        return self.dirs.work

    @property
    def result(self) -> Path:
        return self.dirs.result

    @classmethod
    @contextmanager
    def open(cls, out: str | Path, record: dict, *, resume: bool, main: bool = True, barrier: Callable[[], None] = lambda: None) -> Iterator[Run]:
        """Claim the run directory of ``out`` for the ``with`` block; see the class docstring.

        Args:
            out: ``--out``.
            record: the run's options, written to ``config.json`` (a resume checks them).
            resume: continue the interrupted run in ``<out>.work`` (``validate`` checked its seals).
            main: whether this is the process that writes (all but one of a distributed run read).
            barrier: waits for every process (accelerate's ``wait_for_everyone``).

        Raises:
            ConfigError: another run holds ``<out>.work``, or it cannot be created.
        """
        run = cls(out, resume, main)
        lock = run._claim(record) if main else None
        barrier()  # every process sees the claimed work directory
        try:
            with _sigterm_as_interrupt():  # so that a SIGTERM outside healing cleans up like Ctrl-C
                yield run
        except BaseException as error:
            if main:
                run._clean_up(error)
            raise
        finally:
            if lock is not None:
                os.close(lock)

    def stage(self, name: str, compute: Callable[[], T], save: Callable[[T, Path], None], load: Callable[[Path], T],
              *, shared: bool = False, barrier: Callable[[], None] = lambda: None) -> tuple[T, bool]:
        """A stage's result kept in ``<out>.work/name``: loaded when a ``--resume`` finds it sealed,
        else computed, written atomically by the main process and sealed.

        Args:
            shared: only the main process computes; after ``barrier`` every process loads the
                written file (so all select from the same scores).

        Returns:
            (the result, whether it came from the interrupted run).
        """
        path = self.work / name
        if self.resume and sealed(self.work, name):
            return load(path), True
        value = compute() if self.main or not shared else None
        if self.main:
            save(value, path)
            seal(self.work, name)
        if shared:
            barrier()
            value = load(path)
        return value, False

    def publish(self) -> None:
        """Rename the verified result into ``<out>`` (an earlier result goes aside and is deleted
        last) and delete ``<out>.work``."""
        replace_dir(self.result, self.dirs.out, self.dirs.previous)
        shutil.rmtree(self.work, ignore_errors=True)

    def _claim(self, record: dict) -> int | None:
        """Make ``<out>.work`` this run's (or take the interrupted one on --resume) and lock it.

        Returns:
            The locked file descriptor of ``<out>.work/.lock`` (None where flock does not exist);
            the lock ends with the process, so a killed run never leaves a stale one.
        """
        from interlace.config import ConfigError
        from interlace.files import writing

        work = self.work
        busy = f"another run is using {work} right now; wait for it to end, or give this one another --out"
        # Locked before it is touched: --overwrite must not delete the state of a run still going.
        held = _lock(work, busy) if work.exists() else None
        if self.resume:
            return held
        shutil.rmtree(work, ignore_errors=True)  # validate() allowed it: --overwrite discards an unfinished run
        if held is not None:
            os.close(held)
        try:
            work.mkdir(parents=True)
            (work / ".lock").touch()  # even where flock does not exist: it marks the directory as a run's
        except FileExistsError:
            raise ConfigError(busy) from None
        except OSError as error:
            raise ConfigError(f"--out {self.dirs.out}: cannot create {work} ({error.strerror}); pass another --out") from None
        lock = _lock(work, busy)
        try:
            with writing(f"the run's state in {work}", "pass an --out on another disk"):
                write_atomic(work / "config.json", json.dumps(record, indent=2))
                seal(work, "config.json")  # a --resume checks the config it continues is the one written here
        except BaseException:
            if lock is not None:
                os.close(lock)
            shutil.rmtree(work, ignore_errors=True)
            raise
        return lock

    def _clean_up(self, error: BaseException) -> None:
        """After a failure: remove the half-assembled result; keep ``<out>.work`` (with a note on
        ``error``) when healing or a saved selection had started, else remove what this run made."""
        work = self.work
        shutil.rmtree(self.result, ignore_errors=True)
        if (self.healing_started or (work / SELECT_STATE).is_file()) and work.exists():
            error.add_note(_resume_note(error, work))
            return
        if not self.resume:
            shutil.rmtree(work, ignore_errors=True)  # nothing healed yet: nothing worth keeping
        if isinstance(error, KeyboardInterrupt):
            error.add_note(f"before healing started; {f'{work} is as it was' if self.resume else 'nothing was kept'}")


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Raise KeyboardInterrupt on SIGTERM (healing installs its own handler, which saves state)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _lock(work: Path, busy: str) -> int | None:
    """flock ``work/.lock`` without waiting; ConfigError(busy) when another process holds it."""
    from interlace.config import ConfigError

    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; validate() still refuses a leftover <out>.work
        return None
    fd = os.open(work / ".lock", os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(busy) from None
    return fd


def _resume_note(error: BaseException, work: Path) -> str:
    """What is in ``<out>.work`` after a failure during a saved selection, healing or after it, and
    what to do with it."""
    from interlace.heal.loop import HealInterrupted

    meta = work / "heal" / "latest" / "meta.json"
    if isinstance(error, HealInterrupted):  # its message already says how to resume
        return f"{work} is kept; pass --overwrite instead of --resume to discard it"
    if meta.exists():
        step = json.loads(meta.read_text())["step"]
        how = f"continue from its checkpoint of step {step} with the saved settings"
    elif not (work / "plan.json").exists():
        done = len(json.loads((work / SELECT_STATE).read_text())["removed"])
        how = f"go on with the layer selection after its {done} finished removal step{'s' * (done != 1)}"
    else:
        how = "reuse its scores and plan (healing restarts; --save-every N keeps checkpoints)"
    return f"{work} is kept: rerun with --resume to {how}, or with --overwrite to start over"
