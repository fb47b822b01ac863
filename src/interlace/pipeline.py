"""`interlace prune` as a library call: analyze -> select -> cut -> heal -> verify -> evaluate -> save.

Work in progress (scores, plan, healing checkpoints) lives in ``<out>.work`` so an interrupted run
resumes without recomputing; the result is assembled in ``<out>.tmp``, verified, and only then
renamed to ``<out>``, so a directory named ``<out>`` is always complete and loads.
"""

from __future__ import annotations

import copy
import json
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from interlace.heal import HealConfig
from interlace.loading import is_vision_language

# The paper's recipe scaled to the embedded model: a 2.6M-parameter model heals with a much larger
# learning rate than an 8B one, and 2048 samples (64 optimizer steps) fit the demo's time budget.
EMBEDDED_HEAL = dict(lr=1e-3, batch_size=32, micro_batch_size=32, warmup_ratio=0.05)
EMBEDDED_TRAIN_SAMPLES = 2048


def train_sample_count(config: "PruneConfig") -> int | None:
    """Healing samples: the flag, else 2048 from the endless embedded stream, else all rows."""
    if config.train_samples is not None:
        return config.train_samples
    return EMBEDDED_TRAIN_SAMPLES if config.data.startswith("embedded") else None


@dataclass
class PruneConfig:
    """Everything `interlace prune` needs; saved resolved in the manifest.

    Attributes:
        model: checkpoint directory or Hub id; None for the embedded model.
        out: output directory (must not exist or be empty unless overwrite).
        ratio: share of decoder layers to remove, K = floor(ratio * L).
        method: selection method (see ``interlace methods``).
        data: data spec for calibration and healing (see ``interlace.data.sources``).
        calib_samples: calibration samples (prompts only unless calib_with_answers).
        train_samples: healing samples (one epoch); None takes the data source's default.
        calib_batch_size: samples per calibration forward.
        calib_with_answers: score whole conversations instead of prompts only.
        use_final_state: let scores use the last layer's output (the paper's code never does).
        heal: healing hyper-parameters; None picks the paper's or, for the embedded model, scaled ones.
        do_heal: heal the survivors (False gives the "no healing" variant).
        evaluate: evaluate before and after: the visual-QA suite (embedded model or data) or,
            for a text-only model, held-out real text (see ``interlace.suites``).
        eval_samples_per_task: held-out items per task for that evaluation; None: the suite's
            default (500 visual-QA questions per task, 100 text items).
        deepstack: Qwen3-VL DeepStack handling, "realign" or "protect".
        seed: seeds data order and any randomness.
        overwrite: replace a non-empty output directory.
        resume: continue from ``<out>.work``.
        dtype: weights dtype for loading ("float32", "bfloat16").
        push_to_hub: Hub repo id to upload the verified folder to (private), or None.
    """

    model: str | None = None
    out: Path = Path("runs/interlace")
    ratio: float = 0.25
    method: str = "interlace"
    data: str = "embedded"
    calib_samples: int = 384
    train_samples: int | None = None
    calib_batch_size: int = 32
    calib_with_answers: bool = False
    use_final_state: bool = False
    heal: HealConfig | None = None
    do_heal: bool = True
    evaluate: bool = True
    eval_samples_per_task: int | None = None
    deepstack: str = "realign"
    seed: int = 0
    overwrite: bool = False
    resume: bool = False
    dtype: str = "float32"
    push_to_hub: str | None = None

    def __post_init__(self) -> None:
        self.out = Path(self.out)


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


def _is_embedded(config: PruneConfig) -> bool:
    return config.model in (None, "embedded")


class ConfigError(ValueError):
    """One or more problems with the inputs of a run, found before any expensive work."""


def validate(config: PruneConfig) -> None:
    """Check everything that can be checked cheaply and report all problems in one line.

    Raises:
        ConfigError: listing every problem found, each with its fix.
    """
    from interlace.data import sources
    from interlace.loading import ModelNotFoundError, resolve
    from interlace.methods import METHODS

    problems: list[str] = []
    num_layers, vision = None, True
    try:
        num_layers, vision = _check_model(resolve(config.model), config.model)
    except ModelNotFoundError as error:
        problems.append(str(error))
    if not 0 < config.ratio < 1:
        problems.append(f"--ratio must be between 0 and 1 (exclusive), got {config.ratio}")
    elif num_layers:
        drops = int(config.ratio * num_layers + 1e-9)
        per_drop = 2 if config.method.startswith("interlace") else 1
        if drops == 0:
            problems.append(f"--ratio {config.ratio} removes no layer of {num_layers} (K = floor(ratio x L) = 0); raise --ratio")
        elif num_layers - drops < 2:
            problems.append(f"--ratio {config.ratio} would leave {num_layers - drops} of {num_layers} layers; keep at least 2 by lowering --ratio")
        elif per_drop * drops > num_layers - 1:
            problems.append(
                f"--ratio {config.ratio} asks {config.method} to drop {drops} of {num_layers} layers, but each drop needs "
                f"a pair of layers, so at most {(num_layers - 1) // 2} fit; lower --ratio"
            )
    if config.method not in METHODS:
        problems.append(f"--method {config.method!r} is unknown; choose from {', '.join(METHODS)}")
    try:
        if sources.parse_data_spec(config.data).kind == "embedded" and not vision:
            problems.append(
                f"--data {config.data} is the visual-QA suite, but {config.model} is a text-only model; "
                "pass --data pydocs (real English text) or a JSONL of text rows"
            )
    except ValueError as error:
        problems.append(str(error))
    if config.calib_samples < 1:
        problems.append(f"--calib-samples must be >= 1, got {config.calib_samples}")
    if config.train_samples is not None and config.train_samples < 1:
        problems.append(f"--train-samples must be >= 1, got {config.train_samples}")
    if config.deepstack not in ("realign", "protect"):
        problems.append(f"deepstack must be realign or protect, got {config.deepstack!r}")
    out = Path(config.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not config.overwrite:
        problems.append(f"--out {out} exists and is not empty; pass --overwrite to replace it")
    if config.resume and not Path(f"{out}.work").is_dir():
        problems.append(f"--resume found no interrupted run in {out}.work; drop --resume to start fresh")
    if problems:
        raise ConfigError("; ".join(problems))


def _check_model(source: str, given: str | None) -> tuple[int | None, bool]:
    """Read the model's config (cheap, no weights) and check its architecture is supported.

    Returns:
        The decoder depth L (when the config names it) and whether the model takes images.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    )

    from interlace.arch import BY_MODEL_TYPE
    from interlace.loading import ModelNotFoundError

    try:
        model_config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ModelNotFoundError(f"cannot load the config of {given or source}: {str(error).splitlines()[0]}") from None
    model_type = model_config.model_type
    known = model_type in BY_MODEL_TYPE or model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    if not known:
        raise ModelNotFoundError(
            f"model type {model_type!r} of {given or source} is not a supported decoder; supported: {', '.join(sorted(BY_MODEL_TYPE))}"
        )
    depth = getattr(model_config.get_text_config(decoder=True), "num_hidden_layers", None)
    return depth, is_vision_language(model_config)


def prune(config: PruneConfig, log=print) -> PruneReport:
    """Run the whole INTERLACE pipeline and write a verified checkpoint to ``config.out``.

    Returns:
        PruneReport with layers, plan, accuracies (when evaluated), healing curve and wall times.
    """
    from interlace.analyze import compute_scores, load_scores, plot_scores, save_scores
    from interlace.arch import get_arch
    from interlace.data import sources
    from interlace.export import model_card
    from interlace.suites import suite_for
    from interlace.heal import heal
    from interlace.loading import load_model
    from interlace.methods import apply_sparsity, get_method, required_ks, select_layers
    from interlace.plots import plot_curve, plot_plan
    from accelerate import PartialState

    from interlace.surgery import remove_layers
    from interlace.verify import VerificationError, verify

    validate(config)
    # Under `accelerate launch` every process runs this function: all of them calibrate-load,
    # cut and heal (healing is distributed); only the main process evaluates and writes.
    state = PartialState()
    main = state.is_main_process
    out, work, tmp = config.out, Path(f"{config.out}.work"), Path(f"{config.out}.tmp")
    log = log if main else (lambda *_: None)
    stage = _Stages(log)
    dtype = getattr(torch, config.dtype)
    heal_config = config.heal or HealConfig(**(EMBEDDED_HEAL if _is_embedded(config) else {}), seed=config.seed)

    with stage("load"):
        model, processor = load_model(config.model, dtype=dtype, device=str(state.device))
        arch = get_arch(model, deepstack=config.deepstack)
        layers_before = len(arch.layers)
    if main:
        work.mkdir(parents=True, exist_ok=True)
        (work / "config.json").write_text(json.dumps(_config_json(config, heal_config), indent=2))

    dense, answers = None, {}
    suite = suite_for(model.config, config.model, config.data) if config.evaluate else None
    if suite and main:
        cached = work / "dense_eval.json"
        with stage("evaluate dense"):
            if config.resume and cached.exists():
                dense = json.loads(cached.read_text())
            else:
                dense = suite.evaluate(model, processor, config.eval_samples_per_task, description="dense model")
                cached.write_text(json.dumps(dense))
            log(f"  dense: {suite.headline(dense)}")
    if main and not is_vision_language(model.config):
        answers["dense"] = chat_answers(model, processor)

    with stage("analyze"):
        scores_path = work / "scores.json"
        calib_stream = sources.iter_samples(config.data, "calib", config.calib_samples, seed=config.seed)
        calib = list(calib_stream)
        data_stats = {"calib": calib_stream.stats.to_json()}
        if main and not (config.resume and scores_path.exists()):
            ks = required_ks(config.method, config.ratio, layers_before)
            scores = compute_scores(
                model, processor, calib, ks=ks, batch_size=config.calib_batch_size, with_answers=config.calib_with_answers
            )
            save_scores(scores, scores_path)
        state.wait_for_everyone()
        scores = load_scores(scores_path)  # every process selects from the same saved scores

    with stage("select"):
        plan = select_layers(
            config.method, scores, config.ratio, protected=arch.protected, use_final_state=config.use_final_state,
            seed=config.seed, model=model, processor=processor, calib=calib,
        )
        if main:
            (work / "plan.json").write_text(json.dumps(plan.to_json(), indent=2))
        for line in plan.log:
            log(f"  {line}")
        log(f"  drop {plan.dropped}, finetune {plan.finetuned}, anchors {plan.anchors}")

    teacher = None
    if config.do_heal and (heal_config.loss != "ce" or heal_config.anchor_weight):
        teacher = copy.deepcopy(model)  # the dense weights before the cut: no extra download
    with stage("cut"):
        if get_method(config.method).kind == "sparsity":
            surgery = {"sparsity": apply_sparsity(config.method, model, processor, calib)}
        else:
            surgery = remove_layers(model, plan.dropped, deepstack=config.deepstack).to_dict()

    heal_result = None
    if config.do_heal and plan.finetuned:
        with stage("heal"):
            train_stream = sources.iter_samples(config.data, "train", train_sample_count(config), seed=config.seed)
            train = list(train_stream)
            data_stats["train"] = train_stream.stats.to_json()
            anchors = [(plan.kept.index(a), a) for a in plan.anchors]
            heal_result = heal(
                model, processor, train, plan.finetuned_after_cut, heal_config, checkpoint_dir=work / "heal",
                resume=config.resume, teacher=teacher, anchor_pairs=anchors,
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

    with stage("save + verify"):
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        try:
            verification = verify(tmp, model=model)
        except VerificationError:
            shutil.rmtree(tmp, ignore_errors=True)  # never leave a checkpoint that looks usable
            raise
        save_scores(scores, tmp / "interlace_scores.json")
        plot_scores(scores, tmp / "scores.png")
        plot_plan(plan, tmp / "plan.png")
        if heal_result:
            plot_curve(heal_result.losses, tmp / "heal_loss.png")

    manifest = {
        "config": _config_json(config, heal_config),
        "report": report.to_json(),
        "scores": scores.to_json(),
        "surgery": surgery,
        "data": data_stats,
        "verification": verification.to_dict() if hasattr(verification, "to_dict") else str(verification),
        "versions": versions(),
    }
    manifest["auto_class"] = _auto_name(model)
    (tmp / "interlace_manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    (tmp / "README.md").write_text(model_card(json.loads(json.dumps(manifest, default=str))))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    shutil.rmtree(work, ignore_errors=True)
    if config.push_to_hub:
        from interlace.export import push_to_hub

        with stage("push to hub"):
            log(f"  {push_to_hub(out, config.push_to_hub)}")
    state.wait_for_everyone()
    return report


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


def _config_json(config: PruneConfig, heal_config: HealConfig) -> dict[str, Any]:
    data = asdict(config)
    data["out"] = str(config.out)
    data["heal"] = asdict(heal_config)
    return data
