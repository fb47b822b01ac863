"""Healing: train only the survivor layers on assistant tokens, through accelerate (SPEC 2.5).

Everything is frozen except the decoder layers named by the plan (all their parameters; no LoRA)
and, on request, the lm_head. One epoch over the given samples in a fixed seeded order, AdamW,
cosine schedule with warmup, gradient clipping and accumulation. The same code runs on one CPU,
one GPU or many processes (``accelerate launch``).

Reliability (issue 7): the trainable weights, optimizer, scheduler and data position are saved
atomically every ``save_every`` optimizer steps; SIGTERM / Ctrl-C save and stop cleanly; a resumed
run skips the batches already consumed and ends with the same weights; a NaN/inf loss stops the
run naming the step and leaves the last good checkpoint untouched.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from interlace.arch import get_arch
from interlace.config import HealConfig
from interlace.data.chat import IGNORE_INDEX, collate_groups, encode_for_training
from interlace.losses import hidden_mse_sum, objective


@dataclass
class HealResult:
    steps: int
    samples: int
    skipped_samples: int
    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0
    resumed_from_step: int = 0
    trainable_parameters: int = 0

    def to_json(self) -> dict:
        return asdict(self)


class HealInterrupted(RuntimeError):
    """SIGTERM or Ctrl-C arrived; the state was saved and the run can be resumed."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is left as it was."""


def set_trainable(model: Any, layer_positions: Sequence[int], train_lm_head: bool = False) -> int:
    """Freeze the model except the given decoder layers (and optionally the lm_head).

    Mutates ``model``'s requires_grad flags. Returns the number of trainable parameters.
    """
    layers = get_arch(model).layers
    bad = [i for i in layer_positions if not 0 <= i < len(layers)]
    if bad:
        raise ValueError(f"layer positions {bad} are outside 0..{len(layers) - 1}")
    model.requires_grad_(False)
    for i in layer_positions:
        layers[i].requires_grad_(True)
    if train_lm_head:
        model.get_output_embeddings().requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _with_lora(model: Any, layer_positions: Sequence[int], config: HealConfig) -> Any:
    """Wrap ``model`` with LoRA adapters on every linear layer of the chosen decoder layers."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ImportError("--heal-method lora needs peft: pip install 'interlace[peft]'") from None
    arch = get_arch(model)
    targets = [
        f"{arch.layers_path}.{i}.{name}"
        for i in layer_positions
        for name, module in arch.layers[i].named_modules()
        if isinstance(module, torch.nn.Linear)
    ]
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0, target_modules=targets)
    wrapped = get_peft_model(model, lora)  # freezes everything but the adapters
    if config.train_lm_head:  # trained in full beside the adapters, as in full healing
        model.get_output_embeddings().requires_grad_(True)
    return wrapped


class _Hidden:
    """Outputs of matching anchor layers in the student and the teacher, for one forward each."""

    def __init__(self) -> None:
        self.student: dict[int, torch.Tensor] = {}
        self.teacher: dict[int, torch.Tensor] = {}
        self.order: list[tuple[int, int]] = []

    def pairs(self):
        return [(self.student[s], self.teacher[t]) for s, t in self.order if s in self.student and t in self.teacher]


@contextlib.contextmanager
def _capture(model: Any, teacher: Any, anchor_pairs: Sequence[tuple[int, int]], config: HealConfig):
    store = _Hidden()
    if not (config.anchor_weight and teacher is not None and anchor_pairs):
        yield store
        return
    store.order = list(anchor_pairs)
    first = lambda out: out[0] if isinstance(out, (tuple, list)) else out  # noqa: E731
    student_layers = get_arch(model).layers
    teacher_layers = get_arch(teacher).layers
    handles = [
        student_layers[s].register_forward_hook(lambda m, a, out, s=s: store.student.__setitem__(s, first(out)))
        for s, _ in anchor_pairs
    ] + [
        teacher_layers[t].register_forward_hook(lambda m, a, out, t=t: store.teacher.__setitem__(t, first(out)))
        for _, t in anchor_pairs
    ]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _atomic_save(state: dict, directory: Path) -> None:
    """Write a checkpoint as directory/latest via a temp dir and a rename."""
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
    path = Path(directory) / "latest" / "state.pt"
    return torch.load(path, weights_only=False) if path.exists() else None


def heal(
    model: Any,
    processor: Any,
    samples: Sequence[dict],
    layer_positions: Sequence[int],
    config: HealConfig,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    teacher: Any | None = None,
    anchor_pairs: Sequence[tuple[int, int]] = (),
) -> HealResult:
    """Train the given decoder layers of ``model`` in place on ``samples``.

    Args:
        model: the (pruned) model; its weights are updated in place.
        processor: the model's processor; chat template and tokenizer build inputs and labels.
        samples: FineVision-schema samples (one epoch, shuffled with ``config.seed``).
        layer_positions: decoder layer positions in ``model`` to train.
        config: hyper-parameters.
        checkpoint_dir: where resumable state goes (needed for save_every, interruption, resume).
        resume: continue from checkpoint_dir/latest if present.
        progress: show a progress bar.
        teacher: the dense model, for ``loss`` "kd"/"kd+ce" and ``anchor_weight``; never trained.
        anchor_pairs: (position in model, position in teacher) of each frozen anchor layer.

    Raises:
        HealInterrupted: on SIGTERM / Ctrl-C, after saving the state.
        NonFiniteLossError: on a NaN or inf loss, without touching the last checkpoint.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    started = time.perf_counter()
    trainable = set_trainable(model, layer_positions, config.train_lm_head)
    base_model = model
    if config.method == "lora":
        model = _with_lora(model, layer_positions, config)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    precision = config.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    accelerator = Accelerator(mixed_precision=precision)
    set_seed(config.seed)
    world = accelerator.num_processes
    per_step = config.micro_batch_size * world
    if config.batch_size % per_step:
        raise ValueError(f"batch_size {config.batch_size} must be a multiple of micro_batch_size x processes = {per_step}")
    accumulation = config.batch_size // per_step
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # transformers also makes the embedding output require grad, which only reentrant
        # checkpointing needs; it would run autograd through every frozen layer below the lowest
        # trainable one and compute their activation gradients for nothing (issue 17).
        base_model.disable_input_require_grads()
    model.train()

    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(config.seed)).tolist()
    order = order * config.epochs
    steps_total = max(1, len(order) // config.batch_size)
    order = order[: steps_total * config.batch_size]  # whole optimizer steps only
    warmup = math.ceil(config.warmup_ratio * steps_total)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_with_warmup(s, steps_total, warmup))
    model, optimizer = accelerator.prepare(model, optimizer)
    if teacher is not None:
        teacher.requires_grad_(False).eval().to(accelerator.device)

    result = HealResult(steps=steps_total, samples=len(order), skipped_samples=0, trainable_parameters=trainable)
    start_step = 0
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
    if resume and checkpoint_dir and (state := load_checkpoint(checkpoint_dir)):
        named = dict(accelerator.unwrap_model(model).named_parameters())
        with torch.no_grad():
            for name, value in state["trainable"].items():
                named[name].copy_(value)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start_step = result.resumed_from_step = state["step"]
        result.losses, result.lrs = state["losses"], state["lrs"]
        result.skipped_samples = state["skipped"]

    def save(step: int) -> None:
        if checkpoint_dir is None or not accelerator.is_main_process:
            return
        unwrapped = accelerator.unwrap_model(model)
        state = {
            "step": step,
            "trainable": {n: p.detach().cpu().clone() for n, p in unwrapped.named_parameters() if p.requires_grad},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "losses": result.losses,
            "lrs": result.lrs,
            "skipped": result.skipped_samples,
            "config": asdict(config),
        }
        _atomic_save(state, checkpoint_dir)

    stop = {"signal": None}

    def on_signal(signum, frame):
        stop["signal"] = signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    tokenizer = getattr(processor, "tokenizer", processor)
    columns = (
        TextColumn("healing"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"), TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, disable=not (progress and accelerator.is_main_process), transient=True) as bar:
            task = bar.add_task("heal", total=steps_total, completed=start_step, loss="-")
            for step in range(start_step, steps_total):
                step_samples = order[step * config.batch_size : (step + 1) * config.batch_size]
                mine = step_samples[accelerator.process_index :: world]
                micro_batches = []
                for micro in range(accumulation):
                    chunk = mine[micro * config.micro_batch_size : (micro + 1) * config.micro_batch_size]
                    encoded = [encode_for_training(processor, samples[i]) for i in chunk]
                    kept = [e for e in encoded if e["input_ids"].shape[1] <= config.max_length and (e["labels"] != IGNORE_INDEX).any()]
                    result.skipped_samples += len(encoded) - len(kept)
                    if kept:  # with and without images: one forward each, same normalisation
                        micro_batches += collate_groups(kept, tokenizer.pad_token_id)
                # Normalise by the answer tokens of the whole global step, so the loss and the
                # gradients do not depend on how samples are grouped into micro-batches/processes.
                local_tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro_batches)
                global_tokens = accelerator.reduce(torch.tensor(float(local_tokens), device=accelerator.device), reduction="sum")
                step_loss = torch.zeros((), device=accelerator.device)
                for micro, batch in enumerate(micro_batches):
                    batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                    labels = batch.pop("labels")
                    sync = accelerator.no_sync(model) if micro < len(micro_batches) - 1 else contextlib.nullcontext()
                    with sync, accelerator.autocast(), _capture(base_model, teacher, anchor_pairs, config) as hidden:
                        logits = model(**batch).logits[:, :-1]
                        teacher_logits = None
                        if teacher is not None and (config.loss != "ce" or config.anchor_weight):
                            with torch.no_grad():
                                teacher_logits = teacher(**batch).logits[:, :-1]
                        loss_sum = objective(config.loss, logits, labels[:, 1:], teacher_logits, config.kd_alpha, config.kd_temperature, config.kd_top_k)
                        for student_h, teacher_h in hidden.pairs():
                            loss_sum = loss_sum + config.anchor_weight * hidden_mse_sum(student_h[:, :-1], teacher_h[:, :-1], labels[:, 1:])
                        if not torch.isfinite(loss_sum):
                            raise NonFiniteLossError(
                                f"loss became {loss_sum.item()} at healing step {step + 1}/{steps_total}; "
                                f"the last good checkpoint in {checkpoint_dir or '(none: set save_every)'} is intact; "
                                "lower the learning rate or check the data"
                            )
                        # DDP averages gradients over processes: scale by world to get the global sum.
                        accelerator.backward(loss_sum * world / global_tokens)
                    step_loss += loss_sum.detach()
                accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                reduced = (accelerator.reduce(step_loss, reduction="sum") / global_tokens).item()
                result.losses.append(round(reduced, 6))
                result.lrs.append(scheduler.get_last_lr()[0])
                bar.update(task, advance=1, loss=f"{reduced:.4f}")
                if config.save_every and (step + 1) % config.save_every == 0 and step + 1 < steps_total:
                    save(step + 1)
                if stop["signal"] is not None:
                    save(step + 1)
                    raise HealInterrupted(
                        f"healing stopped by signal {stop['signal']} after step {step + 1}/{steps_total}; "
                        "state saved, rerun with --resume to continue"
                    )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if config.gradient_checkpointing:
            accelerator.unwrap_model(model).gradient_checkpointing_disable()
    if config.method == "lora":
        accelerator.unwrap_model(model).merge_and_unload()  # writes W + BA into base_model's own modules
    base_model.requires_grad_(False)
    base_model.eval()
    result.wall_seconds = round(time.perf_counter() - started, 2)
    return result
