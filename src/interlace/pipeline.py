"""`interlace prune` as a library call: analyze -> select -> cut -> heal -> verify -> evaluate -> save.

Work in progress (scores, plan, healing checkpoints) lives in ``<out>.work`` so an interrupted run
resumes without recomputing; the result is assembled in ``<out>.tmp``, verified, and only then
renamed to ``<out>``, so a directory named ``<out>`` is always complete and loads.
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

from interlace.heal import HealConfig, HealInterrupted
from interlace.loading import is_vision_language

# The paper's recipe scaled to the embedded model: a 2.6M-parameter model heals with a much larger
# learning rate than an 8B one, and 2048 samples (64 optimizer steps) fit the demo's time budget.
EMBEDDED_HEAL = dict(lr=1e-3, batch_size=32, micro_batch_size=32, warmup_ratio=0.05)
EMBEDDED_TRAIN_SAMPLES = 2048
# Weights dtypes `prune` loads in. float16 cannot heal: AdamW steps on float16 weights, with no
# fp32 master copy and no loss scaling, overflow or vanish (on CPU the loss is NaN by step 2).
DTYPES = ("float32", "bfloat16", "float16")


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
        dtype: weights dtype for loading, one of DTYPES ("float16" only without healing).
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
        from interlace.typecheck import type_problems

        problems = type_problems(self)  # converts out to a Path; validate() checks the values
        if problems:
            raise ConfigError("; ".join(problems))


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

    Runs before any weights load or anything is written: the inputs, the model's config, the
    data's first rows, the output directory, and what healing will need (peft for LoRA).

    Raises:
        ConfigError: listing every problem found, each with its fix.
    """
    from interlace.data import sources, vqa
    from interlace.loading import ModelNotFoundError, resolve
    from interlace.methods import METHODS, get_method

    problems: list[str] = []
    num_layers, vision = None, True
    try:
        num_layers, vision = _check_model(resolve(config.model), config.model)
    except ModelNotFoundError as error:
        problems.append(str(error))
    if config.method not in METHODS:
        problems.append(f"--method {config.method!r} is unknown; choose from {', '.join(METHODS)}")
    if not 0 < config.ratio < 1:
        problems.append(f"--ratio must be between 0 and 1 (exclusive), got {config.ratio}")
    elif num_layers:
        problems += budget_problems(config.ratio, config.method, num_layers)
    data_kind = None
    try:
        data_kind = sources.parse_data_spec(config.data).kind
        if data_kind == "embedded" and not vision:
            problems.append(
                f"--data {config.data} is the visual-QA suite, but {config.model} is a text-only model; "
                "pass --data pydocs (real English text) or a JSONL of text rows"
            )
    except ValueError as error:
        problems.append(str(error))
    if config.calib_samples < 1:
        problems.append(f"--calib-samples must be >= 1, got {config.calib_samples}")
    elif data_kind == "embedded" and config.calib_samples > vqa.CALIB_RESERVE * len(vqa.TASKS):
        problems.append(f"--calib-samples {config.calib_samples} is more than the {vqa.CALIB_RESERVE * len(vqa.TASKS)} of the embedded calibration split; lower it")
    if config.train_samples is not None and config.train_samples < 1:
        problems.append(f"--train-samples must be >= 1, got {config.train_samples}")
    if config.calib_batch_size < 1:
        problems.append(f"calib_batch_size must be >= 1, got {config.calib_batch_size}")
    if config.eval_samples_per_task is not None and not 1 <= config.eval_samples_per_task <= vqa.TEST_RESERVE:
        problems.append(f"--eval-samples-per-task must be in 1..{vqa.TEST_RESERVE}, got {config.eval_samples_per_task}")
    if config.seed < 0:
        problems.append(f"--seed must be >= 0, got {config.seed}")
    if config.deepstack not in ("realign", "protect"):
        problems.append(f"deepstack must be realign or protect, got {config.deepstack!r}")
    heals = config.do_heal and config.method in METHODS and get_method(config.method).kind == "layers"
    if config.dtype not in DTYPES:
        problems.append(f"--dtype {config.dtype!r} is not supported; choose from {', '.join(DTYPES)}")
    elif config.dtype == "float16" and heals:
        problems.append(
            "--dtype float16 cannot heal: AdamW updates float16 weights without an fp32 master copy, "
            "so the loss overflows to NaN; use --dtype bfloat16 or float32, or --no-heal"
        )
    if heals and config.heal is not None and config.heal.method == "lora":
        try:
            import peft  # noqa: F401
        except ImportError:
            problems.append("--heal-method lora needs peft, which is not installed: pip install 'interlace[peft]', or use --heal-method full")
    out, work = Path(config.out), Path(f"{config.out}.work")
    parent = next((p for p in out.absolute().parents if p.exists()), None)
    if out.exists() and not out.is_dir():
        problems.append(f"--out {out} is a file; pass a directory path")
    elif not out.exists() and (parent is None or not parent.is_dir() or not os.access(parent, os.W_OK)):
        problems.append(f"--out {out} cannot be created: {parent} is not a writable directory; pass another --out")
    elif out.exists() and any(out.iterdir()) and not config.overwrite:
        problems.append(f"--out {out} exists and is not empty; pass --overwrite to replace it")
    if config.resume and not work.is_dir():
        problems.append(f"--resume found no interrupted run in {work}; drop --resume to start fresh")
    elif config.resume and (work / "config.json").is_file():
        problems += _resume_problems(config, work)
    elif work.exists() and not config.resume and not config.overwrite:
        problems.append(
            f"{work} holds an unfinished run of --out {out} (interrupted, failed while healing, or still running); "
            f"pass --resume to continue it, or --overwrite to discard it"
        )
    if config.push_to_hub is not None:
        problems += _hub_problems(config.push_to_hub)
    if problems:
        raise ConfigError("; ".join(problems))


def _hub_problems(repo: str) -> list[str]:
    """--push-to-hub runs last: check now what can fail then (the id, offline mode, a token)."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as error:
        return [f"--push-to-hub {repo!r} is not a Hub repo id ({str(error).splitlines()[0]}); write [owner/]name"]
    if constants.HF_HUB_OFFLINE:
        return [f"--push-to-hub {repo} cannot upload with HF_HUB_OFFLINE set; unset it or drop --push-to-hub"]
    if huggingface_hub.get_token() is None:
        return [f"--push-to-hub {repo} needs a Hugging Face token; run `hf auth login` or set HF_TOKEN"]
    return []


# Options a resumed run may change: none of them alters scores, plan or healing.
RESUME_FREE = {"resume", "overwrite", "push_to_hub", "evaluate", "heal.save_every"}


def _resume_problems(config: PruneConfig, work: Path) -> list[str]:
    """--resume continues the saved run: its scores, plan and healing state only fit its options."""
    try:
        saved = json.loads((work / "config.json").read_text())
    except ValueError:
        return [f"--resume: {work / 'config.json'} is unreadable; pass --overwrite instead to start over"]
    heal_config = config.heal or HealConfig(**(EMBEDDED_HEAL if _is_embedded(config) else {}), seed=config.seed)
    now = json.loads(json.dumps(_config_json(config, heal_config), default=str))
    flat = lambda c: {**{k: v for k, v in c.items() if k != "heal"}, **{f"heal.{k}": v for k, v in (c.get("heal") or {}).items()}}  # noqa: E731
    before, after = flat(saved), flat(now)
    changed = [f"{k} {before.get(k)!r} -> {after[k]!r}" for k in after if k not in RESUME_FREE and before.get(k) != after[k]]
    if not changed:
        return []
    return [f"--resume: {work} was started with other options ({', '.join(changed)}); rerun with its options, or pass --overwrite instead of --resume to start over"]


def budget_problems(ratio: float, method: str, num_layers: int) -> list[str]:
    """Whether K = floor(ratio x L) drops fit the method's shape in L layers (no scores needed)."""
    drops = int(ratio * num_layers + 1e-9)
    if drops == 0:
        return [f"--ratio {ratio} removes no layer of {num_layers} (K = floor(ratio x L) = 0); raise --ratio"]
    if num_layers - drops < 2:
        return [f"--ratio {ratio} would leave {num_layers - drops} of {num_layers} layers; keep at least 2 by lowering --ratio"]
    if method.startswith("interlace") and 2 * drops > num_layers - 1:
        return [
            f"--ratio {ratio} asks {method} to drop {drops} of {num_layers} layers, but each drop needs "
            f"a pair of layers, so at most {(num_layers - 1) // 2} fit; lower --ratio"
        ]
    if method.startswith("consecutive") and 2 * drops > num_layers:
        return [
            f"--ratio {ratio} asks {method} to drop a block of {drops} of {num_layers} layers and finetune the {drops} after it, "
            f"so at most {num_layers // 2} fit; lower --ratio"
        ]
    return []


def check_model(model: str | None) -> tuple[int | None, bool]:
    """Resolve a model argument and check it cheaply (config, weight headers; no weights load).

    Returns:
        The decoder depth L (when the config names it) and whether the model takes images.

    Raises:
        ModelNotFoundError: a missing path, an unreadable config or weights, remote code, or an
            unsupported architecture; the message says the fix.
    """
    from interlace.loading import resolve

    return _check_model(resolve(model), model)


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

    name = given or source
    try:  # trust_remote_code=False: refuse auto_map code instead of prompting on stdin
        model_config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as error:
        if "trust_remote_code" in str(error):
            raise ModelNotFoundError(
                f"{name} needs its own Python code (auto_map in its config.json); interlace runs no remote code and "
                "loads only the architectures transformers ships: see `interlace archs`"
            ) from None
        raise ModelNotFoundError(f"cannot load the config of {name}: {str(error).splitlines()[0]}") from None
    model_type = model_config.model_type
    known = model_type in BY_MODEL_TYPE or model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    if not known:
        raise ModelNotFoundError(
            f"model type {model_type!r} of {given or source} is not a supported decoder; supported: {', '.join(sorted(BY_MODEL_TYPE))}"
        )
    if Path(source).is_dir():
        _check_weights(Path(source), name)
    depth = getattr(model_config.get_text_config(decoder=True), "num_hidden_layers", None)
    return depth, is_vision_language(model_config)


def _check_weights(path: Path, name: str) -> None:
    """A local checkpoint's weight files exist and their safetensors headers read (no tensor is
    loaded): a truncated download fails here, not with a traceback after minutes of loading."""
    from safetensors import SafetensorError, safe_open

    from interlace.loading import ModelNotFoundError

    index = path / "model.safetensors.index.json"
    shards = sorted(path.glob("*.safetensors"))
    if index.is_file():
        try:
            named = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, AttributeError):
            raise ModelNotFoundError(f"{index} is not a valid safetensors index (no weight_map); re-download {name}") from None
        missing = [shard for shard in named if not (path / shard).is_file()]
        if missing:
            raise ModelNotFoundError(f"{name} lacks the weight shard(s) {', '.join(missing)} named by {index.name}; re-download it")
        shards = [path / shard for shard in named]
    if not shards and not any(path.glob("pytorch_model*.bin")):
        raise ModelNotFoundError(f"{name} has a config.json but no weights (*.safetensors or pytorch_model*.bin); pass a complete checkpoint")
    for shard in shards:
        try:
            with safe_open(str(shard), "pt"):
                pass
        except (SafetensorError, OSError) as error:
            raise ModelNotFoundError(
                f"{shard} is not a readable safetensors file ({str(error).splitlines()[0]}), e.g. a cut-off download; re-download or re-save {name}"
            ) from None


def prune(config: PruneConfig, log=print) -> PruneReport:
    """Run the whole INTERLACE pipeline and write a verified checkpoint to ``config.out``.

    What a failure leaves on disk (README, "Reliability"): bad input, nothing; a failure before
    healing starts, nothing (a ``--resume`` run leaves ``<out>.work`` as it found it); a failure
    once healing has started, a resumable ``<out>.work``, which the exception's note names with
    how to resume or discard it. ``<out>.tmp`` is never left, and ``<out>`` only ever appears
    complete and verified.

    Returns:
        PruneReport with layers, plan, accuracies (when evaluated), healing curve and wall times.

    Raises:
        ConfigError: bad input (from ``validate``), or another run claimed ``<out>.work`` first.
    """
    from accelerate import PartialState

    # Under `accelerate launch` every process runs this function: all of them calibrate-load,
    # cut and heal (healing is distributed); only the main process evaluates and writes.
    state = PartialState()
    validate(config)
    state.wait_for_everyone()  # every process validated before the main one creates <out>.work
    work, tmp = Path(f"{config.out}.work"), Path(f"{config.out}.tmp")
    heal_config = config.heal or HealConfig(**(EMBEDDED_HEAL if _is_embedded(config) else {}), seed=config.seed)
    lock = _claim_work(config, heal_config, work) if state.is_main_process else None
    healing = {"started": False}
    try:
        with _sigterm_as_interrupt():  # so that a SIGTERM outside healing cleans up like Ctrl-C
            return _prune(config, heal_config, log, state, healing)
    except BaseException as error:
        if state.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            if healing["started"] and work.exists():
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
    except FileExistsError:
        raise ConfigError(busy) from None
    except OSError as error:
        raise ConfigError(f"--out {config.out}: cannot create {work} ({error.strerror}); pass another --out") from None
    lock = _lock(work, busy)
    (work / "config.json").write_text(json.dumps(_config_json(config, heal_config), indent=2))
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
    """What is in ``<out>.work`` after a failure during or after healing, and what to do with it."""
    meta = work / "heal" / "latest" / "meta.json"
    if isinstance(error, HealInterrupted):  # its message already says how to resume
        return f"{work} is kept; pass --overwrite instead of --resume to discard it"
    if meta.exists():
        step = json.loads(meta.read_text())["step"]
        how = f"continue from its checkpoint of step {step} with the saved settings"
    else:
        how = "reuse its scores and plan (healing restarts; --save-every N keeps checkpoints)"
    return f"{work} is kept: rerun with --resume to {how}, or with --overwrite to start over"


def _prune(config: PruneConfig, heal_config: HealConfig, log, state, healing: dict) -> PruneReport:
    """The stages of `prune`, after validation; ``healing["started"]`` is set when healing starts."""
    from interlace.analyze import compute_scores, load_scores, plot_scores, save_scores
    from interlace.arch import get_arch
    from interlace.data import sources
    from interlace.export import model_card
    from interlace.suites import suite_for
    from interlace.heal import heal
    from interlace.loading import load_model
    from interlace.methods import apply_sparsity, get_method, required_ks, select_layers
    from interlace.plots import plot_curve, plot_plan

    from interlace.surgery import remove_layers
    from interlace.verify import VerificationError, verify

    main = state.is_main_process
    out, work, tmp = config.out, Path(f"{config.out}.work"), Path(f"{config.out}.tmp")
    log = log if main else (lambda *_: None)
    stage = _Stages(log)
    dtype = getattr(torch, config.dtype)

    # Calibration rows are read before any weights load, so bad data fails in seconds.
    calib_stream = sources.iter_samples(config.data, "calib", config.calib_samples, seed=config.seed)
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
            healing["started"] = True
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
