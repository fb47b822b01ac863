"""A run's configuration: the configs, their defaults, their validation, and their resolution
(defaults < YAML file < command-line flags).

``PruneConfig`` is what `interlace prune` runs, ``HealConfig`` its healing; ``validate`` checks a
run before any weights load; ``default_heal`` is the one place the embedded model's healing
defaults are applied. The CLI's flags are generated from these dataclasses (``interlace.cli_flags``;
a field's help is its line under Attributes). This module imports
neither torch nor transformers at load time, so the CLI can read it before it sets torch's
threads. A YAML config holds PruneConfig fields at the top level and HealConfig fields under
``heal:``. Unknown keys are rejected with the list of allowed ones, and every value is checked against its
field's declared type with the key named (issue 16); every problem is reported together.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from interlace import run_dir
from interlace.typecheck import check_value, field_types


@dataclass
class HealConfig:
    """Healing hyper-parameters; defaults are the paper's (SPEC 2.5).

    Attributes:
        lr: AdamW learning rate; default by model size: 3e-4 under 1B parameters, else the paper's 1e-5 (its 8B models).
        warmup_ratio: share of optimizer steps spent warming up (paper: 3%).
        weight_decay: AdamW weight decay (paper: 0).
        max_grad_norm: gradient clipping norm (paper: 1.0).
        batch_size: effective batch per optimizer step, all processes together (paper: 32).
        micro_batch_size: samples per forward pass on each process.
        epochs: passes over the healing data (paper: 1).
        max_length: longest tokenised sample kept (paper: 8192); longer ones are skipped.
        train_lm_head: also train the output head (the paper means to freeze it).
        gradient_checkpointing: recompute activations in backward to save memory.
        mixed_precision: "auto" (bf16 where the GPU supports it, else fp32), "bf16" or "no".
        seed: data order and any randomness.
        save_every: optimizer steps between resumable checkpoints (0: only on interruption).
        loss: "ce" (the paper), "kd" (distil the dense teacher) or "kd+ce".
        kd_alpha: weight of the KD term in "kd+ce".
        kd_temperature: distillation temperature.
        kd_top_k: KL over the teacher's top-k tokens only (0: full vocabulary).
        anchor_weight: weight of the MSE between the anchors' outputs and the dense model's (the
            anchors are frozen, so their dense outputs are natural targets); 0 disables it.
        method: "full" trains every parameter of the chosen layers (the paper); "lora" trains
            low-rank adapters on their linear layers (peft) and merges them before returning,
            so the result is still a plain checkpoint.
        lora_rank: LoRA rank r.
        lora_alpha: LoRA scaling alpha.
        data_workers: DataLoader processes that render, process and tokenize the next steps'
            samples while the model trains; 0 encodes on the training process; -1 chooses by
            device (on a CPU 1 when the torch threads leave a core free, else 0; up to 4 per GPU process).
        length_grouping: within each optimizer step, put samples of similar length in the same
            micro-batch (the step's samples, hence its update, are unchanged; less padding).
        packing: lay each micro-batch's samples end to end in one row with position ids
            restarting per sample (no padding); needs an attention kernel that separates them
            (flash-attention 2, or sdpa/eager through transformers' packed-sequence mask).
    """

    lr: float = 1e-5
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    batch_size: int = 32
    micro_batch_size: int = 4
    epochs: int = 1
    max_length: int = 8192
    train_lm_head: bool = False
    gradient_checkpointing: bool = False
    mixed_precision: str = "auto"
    seed: int = 0
    save_every: int = 0
    loss: str = "ce"
    kd_alpha: float = 0.5
    kd_temperature: float = 1.0
    kd_top_k: int = 0
    anchor_weight: float = 0.0
    method: str = "full"
    lora_rank: int = 16
    lora_alpha: float = 32.0
    data_workers: int = -1
    length_grouping: bool = True
    packing: bool = False

    def __post_init__(self) -> None:
        from interlace.typecheck import type_problems

        problems = type_problems(self)  # "1e-3" or [1] would fail the comparisons below obscurely
        if problems:
            raise ValueError("; ".join(problems))
        finite = math.isfinite
        if self.method not in ("full", "lora"):
            problems.append(f"method must be full or lora, got {self.method!r}")
        if self.lora_rank < 1 or not (finite(self.lora_alpha) and self.lora_alpha > 0):
            problems.append(f"need lora_rank >= 1 and lora_alpha > 0, got {self.lora_rank} and {self.lora_alpha}")
        if self.loss not in ("ce", "kd", "kd+ce"):
            problems.append(f"loss must be ce, kd or kd+ce, got {self.loss!r}")
        # Written as "not (x > 0)" so that NaN, which compares false with everything, fails too.
        if not (0 <= self.kd_alpha <= 1) or not (finite(self.kd_temperature) and self.kd_temperature > 0) or self.kd_top_k < 0:
            problems.append("need 0 <= kd_alpha <= 1, kd_temperature > 0 (finite) and kd_top_k >= 0")
        if not (finite(self.anchor_weight) and self.anchor_weight >= 0):
            problems.append(f"anchor_weight must be a finite number >= 0, got {self.anchor_weight}")
        if not 0 < self.lr <= 1:  # inf and 1e308 are finite-looking inputs that end as a NaN loss
            problems.append(f"lr must be a number in (0, 1], got {self.lr} (the paper: 1e-5; the embedded model: 1e-3)")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not (finite(self.weight_decay) and self.weight_decay >= 0):
            problems.append(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if not (finite(self.max_grad_norm) and self.max_grad_norm > 0):
            problems.append(f"max_grad_norm must be a finite number > 0, got {self.max_grad_norm}")
        if self.micro_batch_size < 1 or self.batch_size < self.micro_batch_size:
            problems.append(f"need 1 <= micro_batch_size <= batch_size, got {self.micro_batch_size} and {self.batch_size}")
        elif self.batch_size % self.micro_batch_size:
            problems.append(
                f"batch_size {self.batch_size} must be a multiple of micro_batch_size {self.micro_batch_size} "
                f"(an optimizer step is whole micro-batches); e.g. micro_batch_size "
                f"{fit_micro_batch(self.batch_size, self.micro_batch_size)}"
            )
        if self.mixed_precision not in ("auto", "bf16", "no"):
            problems.append(f"mixed_precision must be auto, bf16 or no, got {self.mixed_precision!r}")
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if self.max_length < 1:
            problems.append(f"max_length must be >= 1, got {self.max_length}")
        if self.data_workers < -1:
            problems.append(f"data_workers must be -1 (choose by device), 0 (no workers) or more, got {self.data_workers}")
        if self.save_every < 0:
            problems.append(f"save_every must be >= 0 (0: save only on interruption), got {self.save_every}")
        if problems:
            raise ValueError("; ".join(problems))



# The paper's recipe scaled to the embedded model: a 2.6M-parameter model heals with a much larger
# learning rate than an 8B one, and 2048 samples (64 optimizer steps) fit the demo's time budget.
EMBEDDED_HEAL = dict(lr=1e-3, batch_size=32, micro_batch_size=32, warmup_ratio=0.05)
EMBEDDED_TRAIN_SAMPLES = 2048
# Weights dtypes `prune` loads in. float16 cannot heal: AdamW steps on float16 weights, with no
# fp32 master copy and no loss scaling, overflow or vanish (on CPU the loss is NaN by step 2).
DTYPES = ("float32", "bfloat16", "float16")


def is_embedded(model: str | None) -> bool:
    """Whether a model argument names the embedded model (None or "embedded")."""
    return model in (None, "embedded")


# The default learning rate by model size. The paper heals 8B models with 1e-5 (arXiv 2511.19676,
# section 4.1). Models under a billion parameters barely move at that rate: on Gemma 3 270M four
# steps took the loss 5.44 -> 5.11 at 1e-5 and to 4.64 at 3e-4, and SmolLM2-135M heals likewise
# (README, "Healing", lists the runs). Between 1B and 8B nothing was measured: the paper's value.
SMALL_MODEL_PARAMETERS = 10**9
SMALL_MODEL_LR = 3e-4
PAPER_LR = 1e-5


def heal_lr(parameters: int | None) -> float:
    """The default healing learning rate for a model of ``parameters`` (None: unknown, the paper's)."""
    return SMALL_MODEL_LR if parameters is not None and parameters < SMALL_MODEL_PARAMETERS else PAPER_LR


def parameter_count(model: str | None) -> int | None:
    """The parameters of ``model`` (tied ones once) from its config, built on the meta device (no
    weights read); None where the config cannot be read (an unreachable Hub id: validation says why)."""
    from interlace.loading import ModelNotFoundError, read_config, resolve

    try:
        config = read_config(resolve(model), model)
        import torch

        from interlace.loading import model_class

        with torch.device("meta"):
            skeleton = model_class(config).from_config(config)
    except (ModelNotFoundError, OSError, ValueError, TypeError, ImportError, RuntimeError):
        return None
    return sum(p.numel() for p in skeleton.parameters())


def lr_note(model: str | None, lr: float) -> str:
    """Where a run's learning rate came from, for the manifest and the model card."""
    if is_embedded(model):
        return "the embedded model's default" if lr == EMBEDDED_HEAL["lr"] else "given"
    parameters = parameter_count(model)
    if lr != heal_lr(parameters):
        return "given" + (" (the paper's)" if lr == PAPER_LR else "")
    if parameters is None:
        return "default: the paper's (model size unknown)"
    size = f"{parameters / 1e6:.0f}M" if parameters < 10**9 else f"{parameters / 1e9:.1f}B"
    return f"default for {size} parameters: {SMALL_MODEL_LR} under 1B, else the paper's {PAPER_LR}"


def default_heal(model: str | None, seed: int = 0, given: dict[str, Any] | None = None) -> HealConfig:
    """Healing options for ``model``: the paper's, scaled for the embedded model, then ``given``.

    The one place the defaults are decided. The learning rate: the embedded model's 1e-3; else
    by size (``heal_lr``): 3e-4 under a billion parameters, the paper's 1e-5 from there up (and
    for a model whose size cannot be read). ``--lr 1e-5`` gives the paper's value to any model.

    When ``given`` sets batch_size but not micro_batch_size, the micro-batch becomes the largest
    that divides it (48 with the embedded 32 gives 24) instead of an error.

    Raises:
        ValueError: an option out of its range (HealConfig's message).
    """
    given = given or {}
    by_size = {} if is_embedded(model) or "lr" in given else {"lr": heal_lr(parameter_count(model))}
    values = {**(EMBEDDED_HEAL if is_embedded(model) else by_size), "seed": seed, **given}
    if "micro_batch_size" not in given and isinstance(values.get("batch_size", 32), int) and values.get("batch_size", 32) >= 1:
        values["micro_batch_size"] = fit_micro_batch(values.get("batch_size", 32), values.get("micro_batch_size", 4))
    return HealConfig(**values)


def train_sample_count(config: PruneConfig) -> int | None:
    """Healing samples: the flag, else 2048 from the endless embedded stream, else all rows."""
    if config.train_samples is not None:
        return config.train_samples
    return EMBEDDED_TRAIN_SAMPLES if config.data.startswith("embedded") else None


# The method `prune` (and `demo`, `sweep`) runs without --method: INTERLACE, the paper's exact
# method. The one place to change it when benchmarks/best_plan_study.py shows another leading on
# every real model (docs/benchmarks.md).
DEFAULT_METHOD = "interlace"


@dataclass
class PruneConfig:
    """Everything `interlace prune` needs; saved resolved in the manifest.

    Attributes:
        model: checkpoint directory or Hub id; None for the embedded model.
        out: output directory for the pruned checkpoint: new, empty, or an earlier result with
            overwrite; never the current, the model's or the data's directory.
        ratio: share of decoder layers to remove, K = floor(ratio * L).
        method: selection method (see ``interlace methods``), or auto: the plan chooser.
        protect: layers no method may drop, on top of those the architecture protects: a comma
            list of first:N, last:M and layer indices (e.g. first:4,last:2); empty: none (the paper).
        data: calibration and healing data: embedded, pydocs (real English text), a local
            JSONL/Parquet/imagefolder, a Hub dataset, or finevision (``interlace.data.sources``);
            default: embedded for the embedded model and other VLMs, pydocs for a text-only model.
        images_anywhere: let data rows name image files outside the data file's directory
            (absolute paths, ``..``); off, such rows are bad rows.
        calib_samples: calibration samples (prompts only unless calib_with_answers).
        train_samples: healing samples (one epoch); default: 2048 for the embedded suite, else all rows.
        calib_batch_size: samples per calibration forward.
        calib_with_answers: score whole conversations instead of prompts only.
        use_final_state: let scores use the last layer's output (the paper's code never does).
        heal: healing hyper-parameters; None picks the paper's or, for the embedded model, scaled ones.
        do_heal: heal the survivor layers (off gives the "no healing" variant).
        evaluate: evaluate before and after: the visual-QA suite (embedded model or data) or,
            for a text-only model, held-out real text (see ``interlace.suites``).
        eval_samples_per_task: held-out items per task for that evaluation; default: the suite's
            (500 visual-QA questions per task, 100 text items).
        deepstack: Qwen3-VL DeepStack handling, "realign" or "protect".
        seed: seeds data order and any randomness.
        overwrite: replace an earlier interlace result in out (and discard an unfinished run's
            <out>.work); a directory that holds anything else is never replaced.
        resume: continue an interrupted run from ``<out>.work``.
        dtype: weights dtype: float32, bfloat16, or float16 (without healing only).
        push_to_hub: Hub repo id to upload the verified result to (private).
    """

    model: str | None = None
    out: Path = Path("runs/interlace")
    ratio: float = 0.25
    method: str = DEFAULT_METHOD
    protect: str = ""
    data: str | None = None
    images_anywhere: bool = False
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


class ConfigError(ValueError):
    """One or more problems with the inputs of a run, found before any expensive work."""


def with_model_defaults(config: PruneConfig) -> PruneConfig:
    """``config`` with the defaults that depend on the model filled in, as a copy (the caller's
    object is left as it is); ``config`` itself when there is nothing to fill.

    ``data`` None becomes the model's default data (``interlace.suites.default_data``): the
    visual-QA suite for the embedded model and other VLMs, pydocs for a text-only model. The API
    resolves it here, once, so ``PruneConfig(model="smollm2")`` in Python runs what
    ``interlace prune smollm2`` runs (tests/test_config.py).
    """
    if config.data is not None:
        return config
    from interlace.suites import default_data

    return dataclasses.replace(config, data=default_data(config.model))


def validate(config: PruneConfig) -> None:
    """Check everything that can be checked cheaply and report all problems in one line.

    Runs before any weights load or anything is written: the inputs, the model's config, the
    data's first rows, the output directory, and what healing will need (peft for LoRA).

    Raises:
        ConfigError: listing every problem found, each with its fix.
    """
    if not isinstance(config, PruneConfig):
        raise TypeError(f"config must be a PruneConfig, got {type(config).__name__}")
    config = with_model_defaults(config)
    from interlace.data import sources, vqa
    from interlace.loading import ModelNotFoundError, check_model
    from interlace.methods import METHODS, get_method

    problems: list[str] = []
    num_layers, vision = None, True
    try:
        num_layers, vision = check_model(config.model)
    except ModelNotFoundError as error:
        problems.append(str(error))
    problems += method_problems([config.method], [config.ratio], num_layers)
    problems += protect_problems(config.protect, [config.method], [config.ratio], num_layers)
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
    problems += count_problems(config.calib_samples, config.train_samples, config.eval_samples_per_task)
    if config.calib_samples >= 1 and data_kind == "embedded" and config.calib_samples > vqa.CALIB_RESERVE * len(vqa.TASKS):
        reserve = vqa.CALIB_RESERVE * len(vqa.TASKS)
        problems.append(f"--calib-samples {config.calib_samples} is more than the {reserve} of the embedded calibration split; lower it")
    if config.calib_batch_size < 1:
        problems.append(f"calib_batch_size must be >= 1, got {config.calib_batch_size}")
    if not 0 <= config.seed < 2**32:  # numpy's and torch's seeds are unsigned 32-bit integers
        problems.append(f"--seed must be >= 0 and <= {2**32 - 1}, got {config.seed}")
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
    if heals and num_layers is not None:
        problems += _kd_problems(config)
    too_long = path_problems(config.out, "--out") or path_problems(f"{config.out}.work", "--out")
    if too_long:  # the checks below would fail on such a path with ENAMETOOLONG
        raise ConfigError("; ".join(problems + too_long))
    # What --out, --overwrite and --resume may touch (README, "Reliability"): interlace.run_dir.
    out_problems = run_dir.out_problems(config.out, overwrite=config.overwrite, resume=config.resume, model=config.model, data=config.data)
    problems += out_problems
    if config.resume and not out_problems:
        problems += _resume_problems(config, run_dir.run_dirs(config.out).work)
    if config.push_to_hub is not None:
        problems += _hub_problems(config.push_to_hub)
    if problems:
        raise ConfigError("; ".join(problems))


def _kd_problems(config: PruneConfig) -> list[str]:
    """--kd-top-k larger than the vocabulary would fail in torch.topk after the model loads and heals."""
    heal = config.heal
    if heal is None or heal.loss == "ce" or heal.kd_top_k == 0:
        return []
    from transformers import AutoConfig

    from interlace.loading import resolve

    vocab = getattr(AutoConfig.from_pretrained(resolve(config.model)).get_text_config(decoder=True), "vocab_size", None)
    if isinstance(vocab, int) and heal.kd_top_k > vocab:
        return [f"--kd-top-k {heal.kd_top_k} is larger than the model's vocabulary of {vocab} tokens; pass at most {vocab}, or 0 for all"]
    return []


def input_problems(
    model: str | None,
    methods: Sequence[str] = (),
    ratios: Sequence[float] = (),
    calib_samples: int = 1,
    train_samples: int | None = None,
    eval_n: int | None = None,
    report_dir: Path | None = None,
    ratio_flag: str = "--ratio",
    protect: str = "",
    seed: int = 0,
    data: str | None = None,
) -> list[str]:
    """The cheap checks of ``validate`` (the same functions) for compare, sweep and eval, from the
    CLI and the Python API alike: the model (config and weight headers), each ratio against each
    method's shape in its depth, the protected layers, the sample counts, the seed, a report
    directory that is a file or too long a name, and, given ``data``, that a held-out suite can
    score the model on it (compare and sweep score every row).

    Returns:
        Every problem found, each once, in the order found; empty when the inputs are fine.
    """
    from interlace.loading import ModelNotFoundError, check_model

    problems: list[str] = []
    num_layers, vision = None, False
    try:
        num_layers, vision = check_model(model, prunable=bool(methods))  # eval (no methods) runs any causal LM
    except ModelNotFoundError as error:
        problems.append(str(error))
    if vision and data is not None and not is_embedded(model) and not data.startswith("embedded"):
        # interlace.suites.suite_for: a VLM is scored on the built-in visual-QA suite only
        problems.append(
            f"{model} is a vision-language model: its rows are scored on the built-in visual-QA suite (--data embedded), "
            f"not on --data {data}; evaluate each checkpoint with `interlace eval --harness lmms-eval` instead"
        )
    problems += method_problems(list(methods), list(ratios), num_layers, ratio_flag)
    problems += protect_problems(protect, list(methods), list(ratios), num_layers)
    problems += count_problems(calib_samples, train_samples, eval_n)
    if not 0 <= seed < 2**32:  # numpy's and torch's seeds are unsigned 32-bit integers
        problems.append(f"--seed must be >= 0 and <= {2**32 - 1}, got {seed}")
    if too_long := path_problems(report_dir, "--out"):
        problems += too_long
    elif report_dir is not None and Path(report_dir).exists() and not Path(report_dir).is_dir():
        problems.append(f"--out {report_dir} is a file; pass a directory path")
    return list(dict.fromkeys(problems))  # the same rule broken by two methods is said once


def method_problems(methods: list[str], ratios: list[float], num_layers: int | None, ratio_flag: str = "--ratio") -> list[str]:
    """Unknown methods (a "-ft" suffix allowed), and each ratio out of (0, 1) or, for a method that
    removes layers, one whose K drops do not fit its shape in ``num_layers`` (when known)."""
    from interlace.methods import METHODS, budget_problems

    problems = [f"{ratio_flag} must be between 0 and 1 (exclusive), got {r}" for r in ratios if not 0 < r < 1]
    for name in methods:
        base = name.removesuffix("-ft")
        if base not in METHODS:
            problems.append(f"--method {name!r} is unknown; choose from {', '.join(METHODS)}")
        elif num_layers and METHODS[base].kind == "layers":
            for ratio in (r for r in ratios if 0 < r < 1):
                problems += [p.replace("--ratio", ratio_flag, 1) for p in budget_problems(ratio, base, num_layers)]
    return problems


def path_problems(path: str | Path | None, flag: str) -> list[str]:
    """A path the filesystem cannot hold: a name longer than NAME_MAX bytes (255 on ext4, xfs,
    btrfs) or a whole longer than PATH_MAX (4096 on Linux), as that filesystem reports them.
    Such a path otherwise fails with ENAMETOOLONG wherever it is first used, often after the work."""
    if path is None:
        return []
    absolute = Path(path).expanduser().absolute()
    existing = next((p for p in (absolute, *absolute.parents) if _exists(p)), Path("/"))
    name_max, path_max = _pathconf(existing, "PC_NAME_MAX", 255), _pathconf(existing, "PC_PATH_MAX", 4096)
    long = [part for part in absolute.parts if len(os.fsencode(part)) > name_max]
    if long:
        shown = long[0] if len(long[0]) <= 40 else f"{long[0][:40]}..."
        return [f"{flag} holds a name of {len(os.fsencode(long[0]))} bytes ({shown}), more than the {name_max} "
                "the filesystem allows; pass a shorter path"]  # fmt: skip
    if len(os.fsencode(str(absolute))) >= path_max:
        return [f"{flag} is a path of {len(os.fsencode(str(absolute)))} bytes, more than the {path_max} the system allows; pass a shorter path"]
    return []


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # ENAMETOOLONG, EACCES
        return False


def _pathconf(path: Path, name: str, default: int) -> int:
    try:
        return os.pathconf(path, name)
    except (OSError, ValueError):
        return default


def protect_problems(spec: str, methods: list[str], ratios: list[float], num_layers: int | None) -> list[str]:
    """A ``--protect`` spec that does not parse or names layers the model lacks, and each layer
    method whose K drops cannot fit beside the protected layers (when the depth is known)."""
    from interlace.methods import METHODS, budget_problems
    from interlace.methods.protect import parse_protect

    try:
        protected = parse_protect(spec, num_layers)
    except ValueError as error:
        return [str(error)]
    if not protected or not num_layers:
        return []
    problems = []
    for name in (m.removesuffix("-ft") for m in methods):
        for ratio in (r for r in ratios if 0 < r < 1):
            if name in METHODS and not budget_problems(ratio, name, num_layers):  # the shape's own problem is reported once
                problems += [f"{p} (--protect {spec})" for p in budget_problems(ratio, name, num_layers, protected)]
    return problems


def count_problems(calib_samples: int, train_samples: int | None, eval_samples_per_task: int | None) -> list[str]:
    """The sample counts every command takes: calibration, healing, held-out items per task."""
    from interlace.data import vqa

    problems = []
    if calib_samples < 1:
        problems.append(f"--calib-samples must be >= 1, got {calib_samples}")
    if train_samples is not None and train_samples < 1:
        problems.append(f"--train-samples must be >= 1, got {train_samples}")
    if eval_samples_per_task is not None and not 1 <= eval_samples_per_task <= vqa.TEST_RESERVE:
        problems.append(f"--eval-samples-per-task must be in 1..{vqa.TEST_RESERVE}, got {eval_samples_per_task}")
    return problems


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


# Options a resumed run may change: none of them alters scores, plan or healing (--out may be
# spelled otherwise, through a link: the work directory found is the same).
RESUME_FREE = {"out", "resume", "overwrite", "push_to_hub", "evaluate", "heal.save_every"}


def _resume_problems(config: PruneConfig, work: Path) -> list[str]:
    """--resume continues the saved run: its scores, plan and healing state only fit its options,
    and only as written (``interlace.run_dir.resume_problems``: config, seals, checkpoint)."""
    integrity = run_dir.resume_problems(work)
    if not (work / "config.json").is_file():
        return integrity
    try:
        saved = json.loads((work / "config.json").read_text())
    except (OSError, ValueError):
        saved = None
    heal_config = config.heal or default_heal(config.model, config.seed)
    now = json.loads(json.dumps(config_json(config, heal_config), default=str))
    if not isinstance(saved, dict) or set(saved) != set(now) or not isinstance(saved.get("heal"), dict):
        return [f"--resume: {work / 'config.json'} is not the config of a run of this interlace version; {run_dir.START_OVER}"]
    flat = lambda c: {**{k: v for k, v in c.items() if k != "heal"}, **{f"heal.{k}": v for k, v in (c.get("heal") or {}).items()}}  # noqa: E731
    before, after = flat(saved), flat(now)
    changed = [f"{k} {before.get(k)!r} -> {after[k]!r}" for k in after if k not in RESUME_FREE and before.get(k) != after[k]]
    if not changed:
        return integrity
    return [
        f"--resume: {work} was started with other options ({', '.join(changed)}); "
        "rerun with its options, or pass --overwrite instead of --resume to start over",
        *integrity,
    ]


def config_json(config: PruneConfig, heal_config: HealConfig) -> dict[str, Any]:
    data = asdict(config)
    data["out"] = str(config.out)
    data["heal"] = asdict(heal_config)
    return data


PRUNE_TYPES = {k: v for k, v in field_types(PruneConfig).items() if k != "heal"}
HEAL_TYPES = field_types(HealConfig)
PRUNE_KEYS = set(PRUNE_TYPES)
HEAL_KEYS = set(HEAL_TYPES)
# Healing fields whose flag carries a heal- prefix: HealConfig.method beside the selection --method,
# and --heal-loss for loss. FLAG_TO_HEAL maps such a flag's parameter back to its field.
HEAL_PARAMS = {"method": "heal_method", "loss": "heal_loss"}
FLAG_TO_HEAL = {param: name for name, param in HEAL_PARAMS.items()}


# A run config is a few dozen keys two levels deep; these limits are far above that and far below
# what could exhaust memory or the stack while loading a hostile file.
MAX_YAML_BYTES = 2**20
MAX_YAML_DEPTH = 16


class _Loader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, where a float needs a dot: ``lr: 1e-3`` would load as the string
    "1e-3". YAML 1.2 (and every user) reads it as a number; so does this loader.

    It also refuses aliases (``*name``) and nesting deeper than MAX_YAML_DEPTH. PyYAML shares an
    aliased node instead of copying it, so a few lines of nested aliases (a "billion laughs") load
    quickly but describe 10**9 values, which anything that walks or prints them (type checks, an
    error message) would try to expand; deep nesting overflows the recursive composer.
    """

    _depth = 0

    def compose_node(self, parent, index):  # noqa: ANN001, ANN201 (PyYAML's signature)
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a run config; write the value out", self.peek_event().start_mark
            )
        if self._depth >= MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nests deeper than {MAX_YAML_DEPTH} levels; a run config is two levels deep", self.peek_event().start_mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def fit_micro_batch(batch_size: int, micro_batch_size: int) -> int:
    """The largest micro-batch <= micro_batch_size that divides batch_size: the default micro-batch
    for a --batch-size given alone (48 with the embedded default 32 gives 24)."""
    return max(d for d in range(1, max(1, min(batch_size, micro_batch_size)) + 1) if batch_size % d == 0)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a YAML run config and reject unknown keys (``--config FILE``)."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"--config {path} does not exist; pass a YAML file") from None
    except OSError as error:  # a name longer than the filesystem allows, a directory not searchable
        raise ConfigError(f"--config {path} cannot be read ({error.strerror}); pass a YAML file") from None
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or read forever
        raise ConfigError(f"--config {path} is not a regular file; pass a YAML file")
    if info.st_size > MAX_YAML_BYTES:
        raise ConfigError(f"--config {path} is {info.st_size} bytes, more than a run config's limit of {MAX_YAML_BYTES}; pass the YAML run config")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"--config {path} is not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    except OSError as error:
        raise ConfigError(f"--config {path} cannot be read ({error.strerror}); pass a readable YAML file") from None
    try:
        data = yaml.load(text, Loader=_Loader) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"--config {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    except ValueError as error:  # an integer of more digits than Python converts (4300, Python 3.11)
        reason = str(error).splitlines()[0].split("; use sys.set_int_max_str_digits")[0]  # advice for programmers
        raise ConfigError(f"--config {path} holds a value that cannot be read ({reason}); correct that value") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path} must hold a mapping of keys to values, got {type(data).__name__}")
    heal = data.get("heal") or {}
    problems = []
    unknown = sorted(map(str, set(data) - PRUNE_KEYS - {"heal"}))
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)} in --config {path}; allowed: {', '.join(sorted(PRUNE_KEYS | {'heal'}))}")
    if not isinstance(heal, dict):
        problems.append(f"'heal' in --config {path} must be a mapping of healing options")
    elif unknown_heal := sorted(map(str, set(heal) - HEAL_KEYS)):
        problems.append(f"unknown heal key(s) {', '.join(unknown_heal)} in --config {path}; allowed: {', '.join(sorted(HEAL_KEYS))}")
    if problems:
        raise ConfigError("; ".join(problems))
    return data


def resolve_config(file_values: dict[str, Any], flag_values: dict[str, Any]) -> PruneConfig:
    """Merge YAML values and explicitly given flags (flags win) into a PruneConfig.

    Args:
        file_values: the parsed YAML (may be empty); healing options under "heal".
        flag_values: only the flags the user typed, prune keys and heal keys mixed.
    """
    problems: list[str] = []
    prune, heal = {}, {}
    for key, value in file_values.items():
        if key == "heal":
            for heal_key, heal_value in (value or {}).items():
                _put(heal, heal_key, heal_value, HEAL_TYPES.get(heal_key), f"heal.{heal_key} in --config", problems)
        else:
            _put(prune, key, value, PRUNE_TYPES.get(key), f"{key} in --config", problems)
    for key, value in flag_values.items():
        flag = "--" + key.replace("_", "-")
        if key in FLAG_TO_HEAL:
            _put(heal, FLAG_TO_HEAL[key], value, HEAL_TYPES[FLAG_TO_HEAL[key]], flag, problems)
        elif key in HEAL_KEYS and key not in PRUNE_KEYS:
            _put(heal, key, value, HEAL_TYPES[key], flag, problems)
        else:
            _put(prune, key, value, PRUNE_TYPES.get(key), flag, problems)
    heal_config = None
    try:
        heal_config = default_heal(prune.get("model"), prune.get("seed", 0), heal)
    except (TypeError, ValueError) as error:
        problems.append(f"healing options: {error}")
    try:
        config = PruneConfig(**prune, heal=heal_config)
    except TypeError as error:
        raise ConfigError("; ".join([*problems, str(error)])) from None
    if problems:  # add what validate finds in the rest, so that every problem is reported at once
        try:
            validate(config)
        except ConfigError as error:
            problems.append(str(error))
        raise ConfigError("; ".join(problems))
    return config


def _put(values: dict[str, Any], key: str, value: Any, hint: Any, name: str, problems: list[str]) -> None:
    """values[key] = value when it has its declared type (unknown keys pass: PruneConfig refuses them)."""
    if hint is None:
        values[key] = value
        return
    value, problem = check_value(name, value, hint)
    if problem:
        problems.append(problem)
    else:
        values[key] = value
