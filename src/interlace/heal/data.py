"""Healing data: each optimizer step's samples encoded off the training loop, in DataLoader workers.

An item of ``StepDataset`` is one process's share of one optimizer step, already rendered with the
chat template, run through the processor, tokenized and collated into micro-batches. Items are
addressed by step number, and which samples a step holds depends only on the seed, the step and
the process rank; so the order is deterministic whatever the number of workers, and ``--resume``
needs no data-loader state: the loader just starts at the resumed step.

Within a step the samples are regrouped by length before they are cut into micro-batches
(``length_groups``). The loss is normalised by the answer tokens of the whole step, so this
changes which samples share a forward pass, never the step's update (up to float rounding), and
it removes most of the padding. ``pack`` goes further where the attention kernel supports it: a
micro-batch becomes one row with position ids restarting at every sample and no padding at all,
as flash-attention's varlen kernels take it (transformers' ``DataCollatorWithFlattening``). On
CPU, transformers 5.x builds the block-diagonal mask from such position ids for sdpa and eager
(``masking_utils.find_packed_sequence_indices``, only with ``attention_mask=None`` and no
cache); FlexAttention has no backward on CPU in torch 2.13.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from interlace.data.chat import IGNORE_INDEX, SEQUENCE_KEYS, collate_groups, encode_for_training, tokenizer_of

# Steps each worker prepares ahead of the loop (DataLoader's prefetch_factor): one step in use, one
# ready, so a step whose samples are slow to process (many images) does not stall the next one.
PREFETCH_STEPS = 2


@dataclass
class StepBatches:
    """One process's micro-batches of one optimizer step, ready for the model.

    Attributes:
        micro_batches: model inputs with ``labels``; one forward pass each.
        skipped: samples dropped (longer than max_length, or with no answer token).
        tokens: token positions the forward passes process, padding included.
        padding: how many of those are padding.
    """

    micro_batches: list[dict[str, torch.Tensor]]
    skipped: int
    tokens: int
    padding: int

    def pin_memory(self) -> StepBatches:
        """Page-locked copies, so the host-to-GPU copies of the next step overlap compute
        (DataLoader calls this in its pinning thread when ``pin_memory=True``)."""
        pinned = [{k: v.pin_memory() for k, v in batch.items()} for batch in self.micro_batches]
        return StepBatches(pinned, self.skipped, self.tokens, self.padding)

    def __reduce__(self) -> tuple:
        # A worker hands a step to the training process through shared memory, one segment (and
        # one file descriptor to receive) per tensor: ~0.3 ms each, 8 ms for a step of 25 small
        # tensors, a third of the step's encoding on the embedded model. One buffer per step
        # makes that a single segment; the tensors come back as views of it.
        return _from_buffer, (*_to_buffer(self.micro_batches), self.skipped, self.tokens, self.padding)


_ALIGN = 16  # bytes; every view starts at a multiple of any dtype's size


def _to_buffer(batches: Sequence[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, list[list[tuple]]]:
    """All tensors of ``batches`` copied into one uint8 buffer, with (key, dtype, shape, offset) each."""
    layout, offset = [], 0
    for batch in batches:
        entries = []
        for key, value in batch.items():
            entries.append((key, value.dtype, tuple(value.shape), offset))
            offset += -(-value.numel() * value.element_size() // _ALIGN) * _ALIGN
        layout.append(entries)
    buffer = torch.empty(offset, dtype=torch.uint8)
    for batch, entries in zip(batches, layout):
        for key, *_, start in entries:
            flat = batch[key].contiguous().view(-1).view(torch.uint8)
            buffer[start : start + flat.numel()] = flat
    return buffer, layout


def _from_buffer(buffer: torch.Tensor, layout: list[list[tuple]], skipped: int, tokens: int, padding: int) -> StepBatches:
    batches = []
    for entries in layout:
        batch = {}
        for key, dtype, shape, start in entries:
            size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            batch[key] = buffer[start : start + size].view(dtype).view(shape)
        batches.append(batch)
    return StepBatches(batches, skipped, tokens, padding)


def length_groups(keys: Sequence[Any], lengths: Sequence[int], size: int) -> list[list[int]]:
    """Cut items into groups of at most ``size`` that share a key, shortest first within a key.

    Args:
        keys: per item, what items must share to be batched together (e.g. the tensors they carry).
        lengths: per item, its length in tokens.
        size: the most items per group.

    Returns:
        Item indices per group; every item is in exactly one group. Keys appear in the order of
        their first item; the sort is stable, so equal lengths keep their input order.
    """
    by_key: dict[Any, list[int]] = {}
    for index, key in enumerate(keys):
        by_key.setdefault(key, []).append(index)
    groups = []
    for members in by_key.values():
        ordered = sorted(members, key=lambda i: lengths[i])
        groups += [ordered[start : start + size] for start in range(0, len(ordered), size)]
    return groups


def pack(encoded: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One-row batch of samples laid end to end, with position ids restarting at every sample.

    There is no attention mask: the model's attention kernel must keep the samples apart from the
    position ids (flash-attention varlen, or transformers' packed-sequence mask for sdpa/eager).
    Labels stay per sample: the first token of every sample is IGNORE_INDEX, so the last token of
    one sample is never trained to predict the first token of the next (the unpacked path never
    predicts a sample's first token either).

    Args:
        encoded: ``encode_for_training`` outputs with the same keys (one modality), batch dim 1.

    Returns:
        input_ids, labels, position_ids (and any other per-token tensor) of shape (1, sum of
        lengths); the rest (pixel values, image grids) concatenated along dim 0.
    """
    keys = set(encoded[0])
    assert all(set(e) == keys for e in encoded), "pack mixes encodings of different modalities"
    batch: dict[str, torch.Tensor] = {}
    for key in encoded[0]:
        if key == "attention_mask":
            continue
        values = [e[key] for e in encoded]
        if key == "labels":
            values = [v.clone() for v in values]
            for v in values:
                v[:, 0] = IGNORE_INDEX
        batch[key] = torch.cat(values, dim=1 if key in SEQUENCE_KEYS else 0)
    batch["position_ids"] = torch.cat([torch.arange(e["input_ids"].shape[1]) for e in encoded])[None]
    return batch


def packing_problem(model: Any) -> str | None:
    """Why ``model`` cannot be trained on packed rows, or None when it can.

    Models with multimodal rotary positions (Qwen2-VL, Qwen2.5-VL, Qwen3-VL: ``mrope_section``)
    compute 3-D position ids from the image grids themselves; one row of restarting 1-D positions
    would give them wrong positions rather than separate samples.
    """
    text = model.config.get_text_config(decoder=True)
    rope = getattr(text, "rope_parameters", None) or getattr(text, "rope_scaling", None) or {}
    if "mrope_section" in rope:
        return f"{model.config.model_type} computes its own multimodal (3-D) rotary positions"
    return None


def _token_counts(batches: Sequence[dict[str, torch.Tensor]]) -> tuple[int, int]:
    """(token positions processed, of which padding) over collated or packed micro-batches."""
    tokens = sum(b["input_ids"].numel() for b in batches)
    real = sum(int(b["attention_mask"].sum()) if "attention_mask" in b else b["input_ids"].numel() for b in batches)
    return tokens, tokens - real


def step_batches(processor: Any, samples: Sequence[dict], indices: Sequence[int], config: Any) -> StepBatches:
    """Encode the given samples (one process's share of a step) into micro-batches.

    With ``config.length_grouping`` off and ``config.packing`` off this is the loop-side encoding
    the healing loop always had: micro-batches of ``micro_batch_size`` in the seeded order, each
    split by modality. With grouping on, the same samples are regrouped by length within the step.

    Args:
        processor: the model's processor or tokenizer.
        samples: every healing sample.
        indices: positions in ``samples`` of this process's share of the step, in seeded order.
        config: a ``HealConfig`` (micro_batch_size, max_length, length_grouping, packing).
    """
    pad_id = tokenizer_of(processor).pad_token_id
    size = config.micro_batch_size
    if not (config.length_grouping or config.packing):  # the path before DataLoader workers, exactly
        batches: list[dict[str, torch.Tensor]] = []
        skipped = 0
        for start in range(0, len(indices), size):
            encoded = [encode_for_training(processor, samples[i]) for i in indices[start : start + size]]
            kept = [e for e in encoded if _trainable(e, config.max_length)]
            skipped += len(encoded) - len(kept)
            if kept:  # with and without images: one forward each, same normalisation
                batches += collate_groups(kept, pad_id)
        return StepBatches(batches, skipped, *_token_counts(batches))
    encoded = [encode_for_training(processor, samples[i]) for i in indices]
    kept = [e for e in encoded if _trainable(e, config.max_length)]
    if config.length_grouping:
        groups = length_groups([tuple(sorted(e)) for e in kept], [e["input_ids"].shape[1] for e in kept], size)
    else:
        groups = [list(range(start, min(start + size, len(kept)))) for start in range(0, len(kept), size)]
    batches = []
    for group in groups:
        members = [kept[i] for i in group]
        batches += [pack(g) for g in _by_keys(members)] if config.packing else collate_groups(members, pad_id)
    return StepBatches(batches, len(encoded) - len(kept), *_token_counts(batches))


def _trainable(encoded: dict[str, torch.Tensor], max_length: int) -> bool:
    return encoded["input_ids"].shape[1] <= max_length and bool((encoded["labels"] != IGNORE_INDEX).any())


def _by_keys(encoded: Sequence[dict[str, torch.Tensor]]) -> list[list[dict[str, torch.Tensor]]]:
    groups: dict[tuple[str, ...], list[dict[str, torch.Tensor]]] = {}
    for item in encoded:
        groups.setdefault(tuple(sorted(item)), []).append(item)
    return list(groups.values())


def step_order(num_samples: int, config: Any) -> list[int]:
    """The epoch(s) of sample indices in the seeded order, cut to whole optimizer steps (all of
    them, as one step, when there are fewer than ``config.batch_size``)."""
    order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(config.seed)).tolist() * config.epochs
    steps = max(1, len(order) // config.batch_size)
    return order[: steps * config.batch_size]


class StepDataset(torch.utils.data.Dataset):
    """Item ``s``: this process's share of optimizer step ``s``, as ``StepBatches``.

    Args:
        processor: the model's processor or tokenizer (copied into each worker).
        samples: every healing sample.
        order: ``step_order``'s sample indices, ``config.batch_size`` per step.
        config: a ``HealConfig``.
        rank: this process's index among ``world`` processes; it takes every world-th sample.
        world: the number of processes.
    """

    def __init__(self, processor: Any, samples: Sequence[dict], order: Sequence[int], config: Any, rank: int = 0, world: int = 1):
        self.processor, self.samples, self.order, self.config = processor, samples, order, config
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return -(-len(self.order) // self.config.batch_size)  # a last partial step only when it is the only one

    def __getitem__(self, step: int) -> StepBatches:
        size = self.config.batch_size
        share = self.order[step * size : (step + 1) * size][self.rank :: self.world]
        return step_batches(self.processor, self.samples, share, self.config)


def _one(item: StepBatches) -> StepBatches:
    return item  # each item is already a whole step: no collation (a module-level function pickles)


def resolve_workers(
    requested: int, device: torch.device | str, cpus: int | None = None, processes: int = 1, threads: int | None = None
) -> int:
    """The DataLoader worker count: ``requested``, or with -1 a default for the device.

    On CPU the forward and backward use ``threads`` cores; a worker pays off only on a core they
    leave free (it would otherwise take time from them), and one is enough: encoding is a small
    share of a CPU step. So 1 when a core is spare, else 0. On an accelerator the training process
    mostly waits on kernels while encoding, image processing above all, runs on the host: up to 4
    per process, leaving each process a core of its own.

    Args:
        requested: ``HealConfig.data_workers``: >= 0 is used as is, -1 means choose.
        device: where the model trains.
        cpus: cores this process may run on (default: its CPU affinity).
        processes: training processes sharing the machine.
        threads: torch threads of the training process (default: ``torch.get_num_threads()``).
    """
    if requested >= 0:
        return requested
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if torch.device(device).type == "cpu":
        threads = threads or torch.get_num_threads()
        return 1 if cpus > threads * processes else 0
    return max(0, min(4, cpus // max(1, processes) - 1))


def step_loader(dataset: StepDataset, start_step: int, workers: int, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """Steps ``start_step`` .. end of ``dataset`` in order, prepared by ``workers`` processes.

    Workers encode whole steps ``PREFETCH_STEPS`` ahead; the DataLoader hands them back in step
    order whatever worker finishes first, so the result does not depend on ``workers``.
    """
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        sampler=range(start_step, len(dataset)),
        collate_fn=_one,
        num_workers=workers,
        prefetch_factor=PREFETCH_STEPS if workers else None,
        pin_memory=pin_memory,
    )
