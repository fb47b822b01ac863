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
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

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
from interlace.heal import state as heal_state
from interlace.heal.loop import HealConfig
from interlace.loading import is_vision_language
from interlace.run_dir import SELECT_STATE, Run, run_id


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


# A full or read-only disk while the result is written: one WriteError line with this advice.
ELSEWHERE = "pass an --out on another disk"


class _StageTimer:
    """Times named stages and prints one line per stage."""

    def __init__(self, log):
        self.wall: dict[str, float] = {}
        self.log = log

    @contextlib.contextmanager
    def __call__(self, name: str):
        self.log(f"[bold]{name}[/]...")
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.wall[name] = round(time.perf_counter() - t0, 2)
        self.log(f"  {name} done in {self.wall[name]:.1f}s")


def prune(config: PruneConfig, log=print) -> PruneReport:
    """Run the whole INTERLACE pipeline and write a verified checkpoint to ``config.out``.

    What a failure leaves on disk (README, "Reliability"; ``interlace.run_dir.Run``): bad input,
    nothing; a failure before healing starts, nothing (a ``--resume`` run leaves ``<out>.work`` as
    it found it), unless a long selection (SLEB) had finished steps; a failure once healing has
    started, or such a selection, a resumable ``<out>.work``, which the exception's note names with
    how to resume or discard it. A half-assembled result (``<out>.work/result``) is never left, and
    ``<out>`` only ever appears complete and verified.

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
    heal_config = config.heal or default_heal(config.model, config.seed)
    with Run.open(config.out, config_json(config, heal_config), resume=config.resume, main=state.is_main_process,
                  barrier=state.wait_for_everyone) as run:
        return _prune(config, heal_config, log, state, run)


def _prune(config: PruneConfig, heal_config: HealConfig, log, state, run: Run) -> PruneReport:
    """The stages of `prune`, after validation, in the claimed run directory ``run``."""
    from interlace.arch import get_arch
    from interlace.calibration import load_scores, save_scores
    from interlace.data import sources
    from interlace.evaluation.suites import suite_for
    from interlace.loading import load_model
    from interlace.methods import Plan, get_method
    from interlace.stages import apply_plan, calibrate, heal_plan, needs_teacher, select

    main = state.is_main_process
    log = log if main else (lambda *_: None)
    stage = _StageTimer(log)

    # Calibration rows are read before any weights load, so bad data fails in seconds.
    calib_stream = sources.iter_samples(
        config.data, "calib", config.calib_samples, seed=config.seed, images_anywhere=config.images_anywhere
    )
    calib = list(calib_stream)
    data_stats = {"calib": calib_stream.stats.to_json()}

    with stage("load"):
        model, processor = load_model(config.model, dtype=getattr(torch, config.dtype), device=str(state.device))
        arch = get_arch(model, deepstack=config.deepstack)
        layers_before = len(arch.layers)

    dense, answers = None, {}
    suite = suite_for(model.config, config.model, config.data) if config.evaluate else None
    if suite and main:
        with stage("evaluate dense"):
            dense, _ = run.stage(
                "dense_eval.json", lambda: suite.evaluate(model, processor, config.eval_samples_per_task, description="dense model"),
                save=lambda value, path: write_atomic(path, json.dumps(value)), load=lambda path: json.loads(path.read_text()),
            )
            log(f"  dense: {suite.headline(dense)}")
    if main and not is_vision_language(model.config):
        answers["dense"] = chat_answers(model, processor)

    with stage("analyze"):  # every process selects from the same saved scores
        scores, _ = run.stage(
            "scores.json",
            lambda: calibrate(model, processor, calib, [config.method], [config.ratio], layers_before,
                              batch_size=config.calib_batch_size, with_answers=config.calib_with_answers),
            save=save_scores, load=load_scores, shared=True, barrier=state.wait_for_everyone,
        )

    train = None
    with stage("select"):

        def choose() -> Plan:
            nonlocal train
            if get_method(config.method).needs_train and config.do_heal:  # the plan chooser heals its finalists briefly
                train = _train_rows(config, data_stats)
            return select(
                config.method, scores, config.ratio, arch, model=model, processor=processor, calib=calib,
                seed=config.seed, use_final_state=config.use_final_state, state=run.work / SELECT_STATE if main else None,
                protect=config.protect, train=train, heal_config=heal_config,
            )

        # A resumed run never repeats a selection (SLEB: an hour on a CPU), and its plan is never
        # rewritten: that would break the seal its checkpoints carry.
        plan, resumed = run.stage(
            "plan.json", choose, save=lambda plan, path: write_atomic(path, json.dumps(plan.to_json(), indent=2)),
            load=lambda path: Plan.from_json(json.loads(path.read_text())),
        )
        if resumed:
            log(f"  the plan of the interrupted run, from {run.work / 'plan.json'}")
        for line in plan.log:
            log(f"  {line}")
        log(f"  drop {plan.dropped}, {_what_heals(plan, config.do_heal)}")

    teacher = None
    if config.do_heal and plan.finetuned and needs_teacher(heal_config):
        teacher = copy.deepcopy(model)  # the dense weights before the cut: no extra download
    with stage("cut"):
        surgery = apply_plan(model, processor, plan, calib, config.deepstack)

    heal_result = None
    if config.do_heal and plan.finetuned:
        with stage("heal"):
            train = train if train is not None else _train_rows(config, data_stats)
            run.healing_started = True
            if main:  # its checkpoints carry this run's config and plan, and a resume checks them
                heal_state.bind(run.work / "heal", run_id(run.work))
            heal_result = heal_plan(
                model, processor, plan, train, heal_config, teacher=teacher, checkpoint_dir=run.work / "heal", resume=config.resume,
            )
            del teacher
            if heal_result is not None:
                model = heal_result.healed(model)

    pruned = None
    if suite and main:
        with stage("evaluate pruned"):
            pruned = suite.evaluate(model, processor, config.eval_samples_per_task, description="pruned model")
            log(f"  pruned: {suite.headline(pruned)}")
    if main and answers:
        answers["pruned"] = chat_answers(model, processor)

    report = PruneReport(
        out=run.dirs.out,
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
    if main:
        with stage("save + verify"):
            verification = _save_verified(run.result, model, processor)
        manifest = {
            "config": config_json(config, heal_config), "report": report.to_json(), "scores": scores.to_json(),
            "surgery": surgery, "data": data_stats, "verification": verification, "versions": versions(),
            "auto_class": _auto_name(model), "heal_lr": lr_note(config.model, heal_config.lr),  # the rule behind config.heal.lr
        }
        _complete_result(run.result, scores, plan, heal_result, manifest)
        run.publish()  # validate() allowed replacing an earlier result (interlace.run_dir)
        if config.push_to_hub:
            from interlace.export import push_to_hub

            with stage("push to hub"):
                log(f"  {push_to_hub(run.dirs.out, config.push_to_hub)}")
    state.wait_for_everyone()
    return report


def _what_heals(plan: Any, do_heal: bool) -> str:
    """What will be trained, not what the method could heal."""
    if not do_heal:
        return "no layer trained (--no-heal)"
    if not plan.finetuned:
        return "nothing to heal"
    return f"heal {plan.finetuned}" + (f", anchors {plan.anchors}" if plan.anchors else "")


def _save_verified(tmp: Path, model: Any, processor: Any) -> dict:
    """Save the pruned model into ``tmp`` and verify it (reload, cached against uncached
    generation); a failed verification leaves nothing that looks usable.

    Returns:
        The verification's record for the manifest.
    """
    from interlace.evaluation.verify import VerificationError, verify

    shutil.rmtree(tmp, ignore_errors=True)
    with writing(f"the result in {tmp}", ELSEWHERE):
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    try:
        return verify(tmp, model=model).to_dict()
    except VerificationError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _complete_result(tmp: Path, scores: Any, plan: Any, heal_result: Any, manifest: dict) -> None:
    """Add the scores, plots, model card and, last, the manifest to the verified checkpoint in
    ``tmp``: a directory holding the manifest is a whole result, which --overwrite may replace."""
    from interlace.calibration import plot_scores, save_scores
    from interlace.export import model_card
    from interlace.plots import plot_curve, plot_plan

    plain = json.loads(json.dumps(manifest, default=str))  # paths and the like as strings, as the manifest stores them
    with writing(f"the result in {tmp}", ELSEWHERE):
        save_scores(scores, tmp / "interlace_scores.json")
        plot_scores(scores, tmp / "scores.png")
        plot_plan(plan, tmp / "plan.png")
        if heal_result:
            plot_curve(heal_result.losses, tmp / "heal_loss.png")
        (tmp / "README.md").write_text(model_card(plain))
        (tmp / "interlace_manifest.json").write_text(json.dumps(plain, indent=2) + "\n")


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
    from interlace.evaluation.generate import generate_answers

    samples = [{"images": [], "texts": [{"user": q, "assistant": ""}], "source": "chat"} for q in CHAT_PROMPTS]
    replies = generate_answers(model, processor, samples, batch_size=len(samples), max_new_tokens=max_new_tokens)
    return [{"prompt": q, "answer": a} for q, a in zip(CHAT_PROMPTS, replies)]


def _auto_name(model: Any) -> str:
    return "AutoModelForImageTextToText" if is_vision_language(model.config) else "AutoModelForCausalLM"
