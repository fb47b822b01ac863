"""Healing: train only the survivor layers on assistant tokens, through accelerate (arXiv 2511.19676, training setup).

Everything is frozen except the decoder layers named by the plan (all their parameters, or LoRA
adapters on their linear layers with ``method="lora"``) and, on request, the lm_head. One epoch
over the given samples in a fixed seeded order, AdamW, cosine schedule with warmup, gradient
clipping and accumulation. The same code runs on one CPU, one GPU or many processes
(``accelerate launch``).

Checkpoints, resume and SIGTERM / Ctrl-C live in ``heal_state``; the teacher's logits and the
anchors' hidden states for KD healing in ``teacher``. A NaN/inf loss stops the run naming the step
and leaves the last good checkpoint untouched.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from interlace.arch import get_arch
from interlace.config.options import HealConfig
from interlace.data.chat import IGNORE_INDEX
from interlace.heal.data import StepDataset, packing_problem, resolve_workers, step_loader, step_order
from interlace.heal.gather import is_sharded, whole_model
from interlace.heal.losses import hidden_mse_sum, objective
from interlace.heal.state import load_checkpoint, restore, save_checkpoint, snapshot, stop_on_signals
from interlace.heal.teacher import capture_anchors, teacher_logits
from interlace.progress import progress as progress_bar
from interlace.typecheck import expect

__all__ = [
    "HealConfig", "HealInterrupted", "HealResult", "NoAnswerTokensError", "NonFiniteLossError", "cosine_with_warmup", "heal", "load_checkpoint",
    "set_trainable", "trainable_parameters",
]


@dataclass
class HealResult:
    """What a healing run did: its steps and samples, the loss and learning rate of every step, and
    the number of trained parameters (written to the manifest).

    ``model`` is set only when training sharded the weights (FSDP, ZeRO-3): the healed model made
    whole again (``interlace.heal.gather``), to evaluate and save instead of the sharded one.

    Throughput (this run's steps): ``step_seconds`` is the time in the step loop, of which
    ``data_wait_seconds`` waiting for the next step's batches; ``answer_tokens`` are the trained
    tokens of all processes; ``tokens`` the token positions this process's forwards ran, of which
    ``padding_tokens`` padding.
    """

    steps: int
    samples: int
    skipped_samples: int
    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0
    resumed_from_step: int = 0
    trainable_parameters: int = 0
    step_seconds: float = 0.0
    data_wait_seconds: float = 0.0
    answer_tokens: int = 0
    tokens: int = 0
    padding_tokens: int = 0

    model: Any = field(default=None, repr=False, compare=False)

    def healed(self, model: Any) -> Any:
        """The model to evaluate and save after this heal: ``model`` itself, or the whole healed
        model where training sharded it (``self.model``)."""
        return self.model if self.model is not None else model

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}


class HealInterrupted(RuntimeError):
    """SIGTERM or Ctrl-C arrived; the state was saved and the run can be resumed."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is left as it was."""

    @classmethod
    def in_dense_model(cls, what: str) -> NonFiniteLossError:
        """The dense model gives NaN or inf already (``what``), before any cut or heal."""
        return cls(f"the dense model's {what} (NaN or inf weights, or an overflow in its dtype); check the checkpoint, or load it in float32")


class NoAnswerTokensError(ValueError):
    """An optimizer step has no answer token to train on: its samples are all longer than
    ``max_length`` or have no assistant answer. The loss would be 0/0 (NaN) and the step a no-op."""


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
    return get_peft_model(model, lora)


def trainable_parameters(model: Any, layer_positions: Sequence[int], config: HealConfig) -> tuple[Any, list[torch.nn.Parameter]]:
    """Freeze ``model`` except what ``config.method`` heals, and return the model to train and its parameters.

    "full" trains every parameter of the given decoder layers; "lora" wraps ``model`` with peft
    adapters on their linear layers and trains only those. Either way ``config.train_lm_head`` also
    trains the lm_head in full. Mutates ``model``'s requires_grad flags.

    Returns:
        ``model`` itself (full) or its peft wrapper (lora), and its trainable parameters in order.

    Raises:
        ValueError: a layer position outside the model.
    """
    set_trainable(model, layer_positions, config.train_lm_head)
    trained = model
    if config.method == "lora":
        trained = _with_lora(model, layer_positions, config)  # freezes everything but the adapters
        if config.train_lm_head:  # so unfreeze the head again, as in full healing
            model.get_output_embeddings().requires_grad_(True)
    return trained, [p for p in trained.parameters() if p.requires_grad]


def _restore_forward(model: Any) -> None:
    """Put back the forward that ``Accelerator.prepare`` replaced on ``model``, if it did.

    Under mixed precision, accelerate 1.x (``prepare_model``) keeps the model's forward in
    ``_original_forward`` and installs an autocast one on the instance, with outputs cast to fp32:
    the healed model would then be evaluated and verified in bf16 against the fp32 weights it
    saves. ``unwrap_model(keep_fp32_wrapper=False)`` is not used: it follows ``__wrapped__`` past
    transformers' own decorators of ``forward`` (``can_return_tuple``, output capture) too.
    """
    original = model.__dict__.pop("_original_forward", None)
    if original is None:
        return
    if getattr(original, "__self__", None) is model and getattr(original, "__func__", None) is type(model).forward:
        del model.forward  # the instance attribute: the class's forward shows through again
    else:  # a forward someone set on the instance before prepare (e.g. an accelerate device hook)
        model.forward = original


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _train_step(
    model: Any,
    base_model: Any,
    micro_batches: Sequence[dict],
    accelerator: Any,
    config: HealConfig,
    teacher: Any | None,
    anchor_pairs: Sequence[tuple[int, int]],
    where: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward every micro-batch of one optimizer step, accumulating the gradients.

    The loss is normalised by the answer tokens of the whole global step, so the loss and the
    gradients do not depend on how samples are grouped into micro-batches/processes.

    Args:
        model: the prepared model to train.
        base_model: the plain model under ``model`` (the anchors are hooked there).
        micro_batches: this process's micro-batches of the step, with labels.
        accelerator: the run's ``accelerate.Accelerator``.
        config: hyper-parameters.
        teacher: the dense model, or None.
        anchor_pairs: (position in model, position in teacher) of each anchor.
        where: the step and the checkpoint left intact, for the NaN/inf error.

    Returns:
        This process's summed loss over the step and the global number of answer tokens (0-dim).

    Raises:
        NonFiniteLossError: on a NaN or inf loss, before its backward.
        NoAnswerTokensError: the step has no answer token on any process.
    """
    world = accelerator.num_processes
    local_tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro_batches)
    global_tokens = accelerator.reduce(torch.tensor(float(local_tokens), device=accelerator.device), reduction="sum")
    if global_tokens.item() == 0:  # reduced over processes: every process raises together
        raise NoAnswerTokensError(
            f"every sample of the step is longer than max_length={config.max_length} tokens or has no assistant "
            f"answer, so there is no answer token to train on ({where}); raise --max-length or check the data"
        )
    step_loss = torch.zeros((), device=accelerator.device)
    for micro, batch in enumerate(micro_batches):
        batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
        targets = batch.pop("labels")[:, 1:]  # (B, T-1): position t predicts token t+1
        # Training never reads a KV cache, and transformers 5.x separates packed samples by their
        # position ids only when there is none (masking_utils.find_packed_sequence_indices).
        batch["use_cache"] = False
        # DDP all-reduces the gradients once, in the backward of the step's last micro-batch.
        sync = accelerator.no_sync(model) if micro < len(micro_batches) - 1 else contextlib.nullcontext()
        with sync, accelerator.autocast(), capture_anchors(base_model, teacher, anchor_pairs, config) as hidden:
            logits = model(**batch).logits[:, :-1]  # (B, T-1, V)
            reference = teacher_logits(teacher, batch, config)
            loss_sum = objective(config.loss, logits, targets, reference, config.kd_alpha, config.kd_temperature, config.kd_top_k)
            for student_h, teacher_h in hidden.pairs():
                loss_sum = loss_sum + config.anchor_weight * hidden_mse_sum(student_h[:, :-1], teacher_h[:, :-1], targets)
            if not torch.isfinite(loss_sum):
                raise NonFiniteLossError(f"loss became {loss_sum.item()} at {where}; lower the learning rate or check the data")
            # DDP averages gradients over processes: scale by world to get the global sum.
            accelerator.backward(loss_sum * world / global_tokens)
        step_loss += loss_sum.detach()
    return step_loss, global_tokens


def _accelerator(config: HealConfig) -> Any:
    """accelerate's Accelerator for ``config.mixed_precision`` ("auto": bf16 where the GPU has it),
    refusing a launch of several processes that accelerate did not make distributed."""
    from accelerate import Accelerator

    precision = config.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    accelerator = Accelerator(mixed_precision=precision)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes == 1:
        raise RuntimeError(
            f"{launched} processes were launched but accelerate set up none as distributed "
            f"({accelerator.distributed_type.value}): each would heal all the data alone. In accelerate 1.16 FSDP and "
            "DeepSpeed need GPUs; on CPU run `accelerate launch --cpu` (data parallel over gloo) or one process"
        )
    return accelerator


def _sharded_problem(config: HealConfig, checkpoint: dict | None) -> str | None:
    """What a sharded heal (FSDP, ZeRO-3) of ``config`` would need that it does not do, if anything:
    its checkpoints would hold shards and sharded optimizer state, so it keeps none."""
    if config.method == "lora":
        return "heal with LoRA (its adapters are merged after healing); heal the survivors whole (--heal-method full) or launch without FSDP/ZeRO-3"
    if config.save_every:
        return f"save resumable checkpoints (--save-every {config.save_every}); pass --save-every 0 or launch without FSDP/ZeRO-3"
    if checkpoint:
        return "resume a heal; rerun with --overwrite to start over"
    return None


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
        model: the (pruned) model; its weights are updated in place (when the launch shards them,
            FSDP or ZeRO-3, the returned ``HealResult.model`` holds them whole instead).
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
        NoAnswerTokensError: an optimizer step with no answer token (all its samples longer than
            ``config.max_length``, or without an assistant answer).
        ValueError: no samples.
        TypeError: an argument of the wrong type (e.g. config a dict instead of a HealConfig).
    """
    expect(model, torch.nn.Module, "model", "a loaded transformers model")
    expect(samples, (list, tuple), "samples", "a list of sample dicts (from load_samples)")
    expect(layer_positions, (list, tuple, range), "layer_positions", "a list of decoder layer positions")
    expect(config, HealConfig, "config", "a HealConfig (e.g. HealConfig(lr=1e-5))")
    if not samples:
        raise ValueError("heal got no samples; pass at least one sample with an assistant answer (train_samples >= 1)")
    from accelerate.utils import set_seed

    started = time.perf_counter()
    base_model = model
    set_seed(config.seed)  # LoRA initialises its adapters from the global RNG
    model, params = trainable_parameters(model, layer_positions, config)
    accelerator = _accelerator(config)
    if config.packing and (problem := packing_problem(model)):
        raise ValueError(f"packing=True (--packing) cannot heal this model: {problem}; use --no-packing")
    set_seed(config.seed)  # again: data order and dropout start from the seed whatever the adapters drew
    world = accelerator.num_processes
    per_step = config.micro_batch_size * world
    if config.batch_size % per_step:
        raise ValueError(f"batch_size {config.batch_size} must be a multiple of micro_batch_size x processes = {per_step}")
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # transformers also makes the embedding output require grad, which only reentrant
        # checkpointing needs; it would run autograd through every frozen layer below the lowest
        # trainable one and compute their activation gradients for nothing
        # (tests/test_heal.py::test_frozen_layers_below_the_survivors_run_without_autograd).
        base_model.disable_input_require_grads()
    model.train()

    order = step_order(len(samples), config)  # seeded: a resumed run sees the same steps
    steps_total = max(1, len(order) // config.batch_size)  # fewer samples than a batch: one step
    warmup = math.ceil(config.warmup_ratio * steps_total)

    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
    state = load_checkpoint(checkpoint_dir) if resume and checkpoint_dir else None
    start_step = state["step"] if state else 0
    sharded = is_sharded(accelerator)
    if sharded and (problem := _sharded_problem(config, state)):
        raise ValueError(f"a sharded launch ({accelerator.distributed_type.value}) cannot {problem}")
    # The workers start now and encode the first steps while the optimizer, accelerate and the
    # teacher are set up, so the first step does not wait for a worker to start.
    dataset = StepDataset(processor, samples, order, config, accelerator.process_index, world)
    workers = resolve_workers(config.data_workers, accelerator.device, processes=int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    batches = iter(step_loader(dataset, start_step, workers, pin_memory=accelerator.device.type == "cuda"))

    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_with_warmup(s, steps_total, warmup))
    model, optimizer = accelerator.prepare(model, optimizer)
    if teacher is not None:
        teacher.requires_grad_(False).eval().to(accelerator.device)

    trainable = sum(p.numel() for p in params)
    result = HealResult(steps=steps_total, samples=len(order), skipped_samples=0, trainable_parameters=trainable)
    if state:
        restore(state, accelerator.unwrap_model(model), optimizer, scheduler)
        result.resumed_from_step = start_step
        result.losses, result.lrs = state["losses"], state["lrs"]
        result.skipped_samples = state["skipped"]

    def save(step: int) -> None:
        if checkpoint_dir is None or not accelerator.is_main_process or sharded:
            return
        record = {"losses": result.losses, "lrs": result.lrs, "skipped": result.skipped_samples, "config": asdict(config)}
        save_checkpoint(snapshot(step, accelerator.unwrap_model(model), optimizer, scheduler, **record), checkpoint_dir)

    show = progress and accelerator.is_main_process
    try:
        # every=0: a line per optimizer step in a log, where the bar draws nothing (steps take seconds).
        with stop_on_signals() as stop, progress_bar("heal step", steps_total, enabled=show, completed=start_step, every=0) as bar:
            for step in range(start_step, steps_total):
                step_started = time.perf_counter()
                prepared = next(batches)  # encoded by the workers while the previous steps trained
                result.data_wait_seconds += time.perf_counter() - step_started
                micro_batches = prepared.micro_batches
                result.skipped_samples += prepared.skipped
                result.tokens += prepared.tokens
                result.padding_tokens += prepared.padding
                where = (
                    f"healing step {step + 1}/{steps_total}; "
                    f"the last good checkpoint in {checkpoint_dir or '(none: set save_every)'} is intact"
                )
                step_loss, tokens = _train_step(model, base_model, micro_batches, accelerator, config, teacher, anchor_pairs, where)
                accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                reduced = (accelerator.reduce(step_loss, reduction="sum") / tokens).item()
                result.losses.append(round(reduced, 6))
                result.answer_tokens += int(tokens.item())
                result.step_seconds += time.perf_counter() - step_started
                result.lrs.append(scheduler.get_last_lr()[0])
                bar.advance(note=f"loss {reduced:.4f}, {tokens.item() / (time.perf_counter() - step_started):.0f} tokens/s")
                if config.save_every and (step + 1) % config.save_every == 0 and step + 1 < steps_total:
                    save(step + 1)
                if stop.signal is not None:
                    save(step + 1)
                    raise HealInterrupted(
                        f"healing stopped by signal {stop.signal} after step {step + 1}/{steps_total}; "
                        + ("a sharded launch saves no state: rerun from the start" if sharded else "state saved, rerun with --resume to continue")
                    )
    finally:
        batches = None  # drops the DataLoader iterator: its workers exit
        unwrapped = accelerator.unwrap_model(model)
        _restore_forward(unwrapped)  # else evaluation and verification run in bf16 autocast
        if config.gradient_checkpointing:
            unwrapped.gradient_checkpointing_disable()
    if config.method == "lora":
        unwrapped.merge_and_unload()  # writes W + BA into base_model's own modules
    if sharded:  # every process gathers, and gets a whole model to evaluate and save
        result.model = whole_model(unwrapped, accelerator.device)
    base_model.requires_grad_(False)
    base_model.eval()
    result.wall_seconds = round(time.perf_counter() - started, 2)
    return result
