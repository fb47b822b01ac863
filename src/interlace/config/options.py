"""A run's options: the ``PruneConfig`` that `interlace prune` runs (and compare and sweep share),
the ``HealConfig`` of its healing, and the defaults they start from.

Each field's help is its line under Attributes: the CLI generates its flags from these classes
(``interlace.cli.flags``). Values are type-checked on construction (``interlace.typecheck``),
HealConfig's ranges too; what needs the model, the data or the disk is checked by
``interlace.config.validation``, and YAML files and flags are merged by ``interlace.config.merge``.
This module imports nothing heavy (no torch, transformers or yaml), so anything may import it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from interlace.typecheck import type_problems


class ConfigError(ValueError):
    """One or more problems with the inputs of a run, found before any expensive work."""


@dataclass
class HealConfig:
    """Healing hyper-parameters; defaults are the paper's (arXiv 2511.19676, training setup; its
    released scripts/train_interlace.sh at github.com/pmadinei/Interlace).

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


def fit_micro_batch(batch_size: int, micro_batch_size: int) -> int:
    """The largest micro-batch <= micro_batch_size that divides batch_size: the default micro-batch
    for a --batch-size given alone (48 with the embedded default 32 gives 24)."""
    return max(d for d in range(1, max(1, min(batch_size, micro_batch_size)) + 1) if batch_size % d == 0)


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


# The method `prune` (and `sweep`) runs without --method: angular's block searched away from the
# fragile first and last layers, healed (``angular+protect``). Of every plan measured on both real
# models of benchmarks/best_plan_study.py (ratio 0.25, the same heal) it is the only one that leads
# on both: tied with the best on SmolLM2-135M (35.61 against SLEB-FT's 35.41, paired ratio 1.006
# [0.976-1.034]) and the best on Gemma 3 270M (43.51; ShortGPT's plan, next on both, 3.5% behind);
# it keeps 0.929 of the embedded model's accuracy. INTERLACE's plan heals to 63.05 and 52.30
# (docs/benchmarks.md, "Which plan heals best on real weights"). The plan chooser (`--method auto`)
# measures more plans for 2-3x the time; `--method interlace` runs the paper's exact method.
DEFAULT_METHOD = "angular+protect"


@dataclass
class PruneConfig:
    """Everything `interlace prune` needs; saved resolved in the manifest.

    Attributes:
        model: checkpoint directory or Hub id; None for the embedded model.
        out: output directory for the pruned checkpoint: new, empty, or an earlier result with
            overwrite; never the current, the model's or the data's directory.
        ratio: share of decoder layers to remove, K = floor(ratio * L).
        method: selection method (see ``interlace methods``); the default, angular+protect: the
            angular-distance block kept away from the fragile first and last layers, healed.
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
            for a text-only model, held-out real text (see ``interlace.evaluation.suites``).
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
        problems = type_problems(self)  # converts out to a Path; validate() checks the values
        if problems:
            raise ConfigError("; ".join(problems))


def config_json(config: PruneConfig, heal_config: HealConfig) -> dict[str, Any]:
    """The resolved run as JSON-ready values, with the healing it runs: the manifest's "config" and
    ``<out>.work/config.json``, which ``--resume`` compares the options it is given against."""
    data = asdict(config)
    data["out"] = str(config.out)
    data["heal"] = asdict(heal_config)
    return data
