"""`interlace prune` as a library call: analyze -> select -> cut -> heal -> verify -> evaluate -> save.

Work in progress (scores, plan, healing checkpoints) lives in ``<out>.work`` so an interrupted run
resumes without recomputing; the result is assembled in ``<out>.work/result``, verified, and only
then renamed to ``<out>``, so a directory named ``<out>`` is always complete and loads. Which
directories a run may write and replace is ``interlace.run_dir``'s to say.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import platform
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from interlace import heal_state
from interlace.config import (  # noqa: F401 (PruneConfig, ConfigError, validate: the API's names)
    ConfigError,
    PruneConfig,
    config_json,
    default_heal,
    lr_note,
    train_sample_count,
    validate,
    with_model_defaults,
)
from interlace.files import write_atomic, writing
from interlace.heal import HealConfig, HealInterrupted
from interlace.loading import is_vision_language
from interlace.run_dir import replace_dir, run_dirs, run_id, seal, sealed

# In <out>.work: the finished steps of a selection that runs long (SLEB), so an interrupted one goes on.
SELECT_STATE = "select_state.json"


@dataclass
class PruneReport:
    out: Path
    layers_before: int
    layers_after: int
    plan: dict
    dense: dict | None = None
    pruned: dict | None = None
    retention: float | None = None
    suite: str | None = None
    answers: dict | None = None
    heal: dict | None = None
    wall_seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        data = asdict(self)
        data["out"] = str(self.out)
        return data


def versions() -> dict[str, str]:
    import accelerate
    import transformers

    import interlace

    return {
        "interlace": interlace.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "python": platform.python_version(),
    }


class _Stages:
    """Times named stages and prints one line per stage."""

    def __init__(self, log):
        self.wall: dict[str, float] = {}
        self.log = log

    def __call__(self, name: str):
        stages = self

        class _Timer:
            def __enter__(self):
                stages.log(f"[bold]{name}[/]...")
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                stages.wall[name] = round(time.perf_counter() - self.t0, 2)
                if exc[0] is None:
                    stages.log(f"  {name} done in {stages.wall[name]:.1f}s")

        return _Timer()


def prune(config: PruneConfig, log=print) -> PruneReport:
    """Run the whole INTERLACE pipeline and write a verified checkpoint to ``config.out``.

    What a failure leaves on disk (README, "Reliability"): bad input, nothing; a failure before
    healing starts, nothing (a ``--resume`` run leaves ``<out>.work`` as it found it), unless a
    long selection (SLEB) had finished steps; a failure once healing has started, or such a
    selection, a resumable ``<out>.work``, which the exception's note names with how to resume or
    discard it. A half-assembled result (``<out>.work/result``) is never left, and ``<out>`` only
    ever appears complete and verified.

    Returns:
        PruneReport with layers, plan, accuracies (when evaluated), healing curve and wall times.

    Raises:
        ConfigError: bad input (from ``validate``), or another run claimed ``<out>.work`` first.
        WriteError: the disk filled up or turned read-only while a checkpoint or the result was
            written; what was half-written is removed.
        TypeError: config is not a PruneConfig.
    """
    if not isinstance(config, PruneConfig):
        raise TypeError(f"config must be a PruneConfig (interlace.config), got {type(config).__name__}")
    config = with_model_defaults(config)  # data None: the model's own kind decides
    from accelerate import PartialState

    # Under `accelerate launch` every process runs this function: all of them calibrate-load,
    # cut and heal (healing is distributed); only the main process evaluates and writes.
    state = PartialState()
    validate(config)
    state.wait_for_everyone()  # every process validated before the main one creates <out>.work
    dirs = run_dirs(config.out)
    work, tmp = dirs.work, dirs.result
    heal_config = config.heal or default_heal(config.model, config.seed)
    lock = _claim_work(config, heal_config, work) if state.is_main_process else None
    healing = {"started": False}
    try:
        with _sigterm_as_interrupt():  # so that a SIGTERM outside healing cleans up like Ctrl-C
            return _prune(config, heal_config, log, state, healing)
    except BaseException as error:
        if state.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            if (healing["started"] or (work / SELECT_STATE).is_file()) and work.exists():
                error.add_note(_resume_note(error, work))
            else:
                if not config.resume:
                    shutil.rmtree(work, ignore_errors=True)  # nothing healed yet: nothing worth keeping
                if isinstance(error, KeyboardInterrupt):
                    error.add_note(f"before healing started; {f'{work} is as it was' if config.resume else 'nothing was kept'}")
        raise
    finally:
        if lock is not None:
            os.close(lock)


@contextlib.contextmanager
def _sigterm_as_interrupt():
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


def _claim_work(config: PruneConfig, heal_config: HealConfig, work: Path) -> int | None:
    """Make ``<out>.work`` this run's (or take the interrupted one on --resume) and lock it.

    Returns:
        The locked file descriptor of ``<out>.work/.lock`` (None where flock does not exist);
        the lock ends with the process, so a killed run never leaves a stale one.

    Raises:
        ConfigError: another run holds ``<out>.work``.
    """
    busy = f"another run is using {work} right now; wait for it to end, or give this one another --out"
    # Locked before it is touched: --overwrite must not delete the state of a run still going.
    held = _lock(work, busy) if work.exists() else None
    if config.resume:
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
        raise ConfigError(f"--out {config.out}: cannot create {work} ({error.strerror}); pass another --out") from None
    lock = _lock(work, busy)
    try:
        with writing(f"the run's state in {work}", "pass an --out on another disk"):
            write_atomic(work / "config.json", json.dumps(config_json(config, heal_config), indent=2))
            seal(work, "config.json")  # a --resume checks the config it continues is the one written here
    except BaseException:
        if lock is not None:
            os.close(lock)
        shutil.rmtree(work, ignore_errors=True)
        raise
    return lock


def _lock(work: Path, busy: str) -> int | None:
    """flock ``work/.lock`` without waiting; ConfigError(busy) when another process holds it."""
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


def _prune(config: PruneConfig, heal_config: HealConfig, log, state, healing: dict) -> PruneReport:
    """The stages of `prune`, after validation; ``healing["started"]`` is set when healing starts."""
    from interlace.analyze import load_scores, plot_scores, save_scores
    from interlace.arch import get_arch
    from interlace.data import sources
    from interlace.export import model_card
    from interlace.loading import load_model
    from interlace.methods import Plan, get_method
    from interlace.plots import plot_curve, plot_plan
    from interlace.stages import apply_plan, calibrate, heal_plan, needs_teacher, select
    from interlace.suites import suite_for
    from interlace.verify import VerificationError, verify

    main = state.is_main_process
    dirs = run_dirs(config.out)  # symbolic links resolved, as validate() checked them
    out, work, tmp = dirs.out, dirs.work, dirs.result
    log = log if main else (lambda *_: None)
    stage = _Stages(log)
    dtype = getattr(torch, config.dtype)

    # Calibration rows are read before any weights load, so bad data fails in seconds.
    calib_stream = sources.iter_samples(
        config.data, "calib", config.calib_samples, seed=config.seed, images_anywhere=config.images_anywhere
    )
    calib = list(calib_stream)
    data_stats = {"calib": calib_stream.stats.to_json()}

    with stage("load"):
        model, processor = load_model(config.model, dtype=dtype, device=str(state.device))
        arch = get_arch(model, deepstack=config.deepstack)
        layers_before = len(arch.layers)

    dense, answers = None, {}
    suite = suite_for(model.config, config.model, config.data) if config.evaluate else None
    if suite and main:
        cached = work / "dense_eval.json"
        with stage("evaluate dense"):
            if config.resume and sealed(work, cached.name):
                dense = json.loads(cached.read_text())
            else:
                dense = suite.evaluate(model, processor, config.eval_samples_per_task, description="dense model")
                write_atomic(cached, json.dumps(dense))
                seal(work, cached.name)
            log(f"  dense: {suite.headline(dense)}")
    if main and not is_vision_language(model.config):
        answers["dense"] = chat_answers(model, processor)

    with stage("analyze"):
        scores_path = work / "scores.json"
        if main and not (config.resume and sealed(work, scores_path.name)):
            scores = calibrate(
                model, processor, calib, [config.method], [config.ratio], layers_before,
                batch_size=config.calib_batch_size, with_answers=config.calib_with_answers,
            )
            save_scores(scores, scores_path)
            seal(work, scores_path.name)
        state.wait_for_everyone()
        scores = load_scores(scores_path)  # every process selects from the same saved scores

    train = None
    with stage("select"):
        plan_path = work / "plan.json"
        resumed_plan = config.resume and sealed(work, plan_path.name)
        if resumed_plan:  # a resumed run never repeats a selection (SLEB: an hour on a CPU)
            plan = Plan.from_json(json.loads(plan_path.read_text()))
            log(f"  the plan of the interrupted run, from {plan_path}")
        else:
            if get_method(config.method).needs_train:  # the plan chooser heals its finalists briefly
                train = _train_rows(config, data_stats)
            plan = select(
                config.method, scores, config.ratio, arch, model=model, processor=processor, calib=calib,
                seed=config.seed, use_final_state=config.use_final_state, state=work / SELECT_STATE if main else None,
                protect=config.protect, train=train, heal_config=heal_config,
            )
        if main and not resumed_plan:  # rewritten, it would break the seal its checkpoints carry
            write_atomic(plan_path, json.dumps(plan.to_json(), indent=2))
            seal(work, plan_path.name)
        for line in plan.log:
            log(f"  {line}")
        trains = config.do_heal and plan.finetuned  # what will be trained, not what the method could heal
        anchors = f", anchors {plan.anchors}" if plan.anchors else ""
        what_heals = f"heal {plan.finetuned}{anchors}" if trains else "no layer trained (--no-heal)" if not config.do_heal else "nothing to heal"
        log(f"  drop {plan.dropped}, {what_heals}")

    teacher = None
    if config.do_heal and plan.finetuned and needs_teacher(heal_config):
        teacher = copy.deepcopy(model)  # the dense weights before the cut: no extra download
    with stage("cut"):
        surgery = apply_plan(model, processor, plan, calib, config.deepstack)

    heal_result = None
    if config.do_heal and plan.finetuned:
        with stage("heal"):
            train = train if train is not None else _train_rows(config, data_stats)
            healing["started"] = True
            if main:  # its checkpoints carry this run's config and plan, and a resume checks them
                heal_state.bind(work / "heal", run_id(work))
            heal_result = heal_plan(
                model, processor, plan, train, heal_config, teacher=teacher, checkpoint_dir=work / "heal", resume=config.resume,
            )
            del teacher

    pruned = None
    if suite and main:
        with stage("evaluate pruned"):
            pruned = suite.evaluate(model, processor, config.eval_samples_per_task, description="pruned model")
            log(f"  pruned: {suite.headline(pruned)}")
    if main and answers:
        answers["pruned"] = chat_answers(model, processor)

    report = PruneReport(
        out=out,
        layers_before=layers_before,
        layers_after=len(get_arch(model).layers),
        plan=plan.to_json(),
        dense=dense,
        pruned=pruned,
        retention=suite.retention(dense, pruned) if dense and pruned else None,
        suite=suite.name if suite else None,
        answers=answers or None,
        heal=heal_result.to_json() if heal_result else None,
        wall_seconds=stage.wall,
    )
    if not main:
        state.wait_for_everyone()
        return report

    # A full or read-only disk ends in one WriteError line; prune() removes the half-written result
    # and says what <out>.work keeps.
    elsewhere = "pass an --out on another disk"
    with stage("save + verify"):
        shutil.rmtree(tmp, ignore_errors=True)
        with writing(f"the result in {tmp}", elsewhere):
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)
        try:
            verification = verify(tmp, model=model)
        except VerificationError:
            shutil.rmtree(tmp, ignore_errors=True)  # never leave a checkpoint that looks usable
            raise
        with writing(f"the result in {tmp}", elsewhere):
            save_scores(scores, tmp / "interlace_scores.json")
            plot_scores(scores, tmp / "scores.png")
            plot_plan(plan, tmp / "plan.png")
            if heal_result:
                plot_curve(heal_result.losses, tmp / "heal_loss.png")

    manifest = {
        "config": config_json(config, heal_config),
        "report": report.to_json(),
        "scores": scores.to_json(),
        "surgery": surgery,
        "data": data_stats,
        "verification": verification.to_dict() if hasattr(verification, "to_dict") else str(verification),
        "versions": versions(),
    }
    manifest["auto_class"] = _auto_name(model)
    manifest["heal_lr"] = lr_note(config.model, heal_config.lr)  # the rule behind config.heal.lr
    with writing(f"the result in {tmp}", elsewhere):
        (tmp / "README.md").write_text(model_card(json.loads(json.dumps(manifest, default=str))))
        # The manifest last: a directory holding it is a whole result, which --overwrite may replace.
        (tmp / "interlace_manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    replace_dir(tmp, out, dirs.previous)  # validate() allowed replacing an earlier result (run_dir)
    shutil.rmtree(work, ignore_errors=True)
    if config.push_to_hub:
        from interlace.export import push_to_hub

        with stage("push to hub"):
            log(f"  {push_to_hub(out, config.push_to_hub)}")
    state.wait_for_everyone()
    return report


def _train_rows(config: PruneConfig, data_stats: dict) -> list[dict]:
    """The healing rows, their read statistics recorded in ``data_stats``."""
    from interlace.data import sources

    stream = sources.iter_samples(
        config.data, "train", train_sample_count(config), seed=config.seed, images_anywhere=config.images_anywhere
    )
    rows = list(stream)
    data_stats["train"] = stream.stats.to_json()
    return rows


CHAT_PROMPTS = (
    "What is the capital of France?",
    "Give me three tips for staying healthy.",
    "Explain in one sentence what a compiler does.",
)


def chat_answers(model: Any, processor: Any, max_new_tokens: int = 48) -> list[dict[str, str]]:
    """Greedy answers of a text model to a few fixed chat prompts, for the manifest and the log: a
    perplexity says how much was lost, these say whether the model still talks sense."""
    from interlace.evaluate import generate_answers

    samples = [{"images": [], "texts": [{"user": q, "assistant": ""}], "source": "chat"} for q in CHAT_PROMPTS]
    replies = generate_answers(model, processor, samples, batch_size=len(samples), max_new_tokens=max_new_tokens)
    return [{"prompt": q, "answer": a} for q, a in zip(CHAT_PROMPTS, replies)]


def _auto_name(model: Any) -> str:
    return "AutoModelForImageTextToText" if is_vision_language(model.config) else "AutoModelForCausalLM"
