"""SLEB (Song et al. 2024, arXiv 2402.09025): remove, one at a time, the block whose removal hurts
calibration loss the least, re-scoring after every removal.

Efficiency: for each batch the current model (already-removed layers as identity) runs once and
every layer's output is cached; the trial of candidate j then replays layers below j from the
cache and computes only layers above it, so a removal step costs about half a forward pass per
candidate instead of a full one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from rich.progress import Progress

from interlace.arch import get_arch
from interlace.data.chat import IGNORE_INDEX
from interlace.surgery import identity_hooks


@contextlib.contextmanager
def _replay(layers, outputs: dict[int, Any], upto: int):
    """Layers below ``upto`` return their cached outputs instead of computing."""
    originals = {}
    try:
        for i in range(upto):
            originals[i] = layers[i].forward
            layers[i].forward = lambda *args, _out=outputs[i], **kwargs: _out
        yield
    finally:
        for i, forward in originals.items():
            layers[i].forward = forward


def _loss_sum(model: Any, batch: dict[str, torch.Tensor]) -> tuple[float, int]:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
    return loss.item(), int((labels != IGNORE_INDEX).sum())


@torch.no_grad()
def sleb_order(
    model: Any,
    batches: Sequence[dict[str, torch.Tensor]],
    budget: int,
    protected: Sequence[int] = (),
    progress: bool = True,
) -> tuple[list[int], list[dict[int, float]]]:
    """Greedy SLEB removal order on calibration ``batches`` (with ``labels`` on answer tokens).

    Returns:
        (removed layers in removal order, per step {candidate: mean loss}).
    """
    layers = get_arch(model).layers
    removed: list[int] = []
    history: list[dict[int, float]] = []
    model.eval()
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("SLEB", total=budget)
        for _ in range(budget):
            candidates = [j for j in range(len(layers)) if j not in removed and j not in protected]
            totals = {j: 0.0 for j in candidates}
            tokens = 0
            for batch in batches:
                outputs: dict[int, Any] = {}
                handles = [
                    layer.register_forward_hook(lambda m, a, out, i=i: outputs.__setitem__(i, out))
                    for i, layer in enumerate(layers)
                ]
                try:
                    with identity_hooks(model, removed):
                        inputs = {k: v for k, v in batch.items() if k != "labels"}
                        model(**inputs, use_cache=False)
                finally:
                    for handle in handles:
                        handle.remove()
                for j in candidates:
                    with identity_hooks(model, removed + [j]), _replay(layers, outputs, j):
                        loss, count = _loss_sum(model, batch)
                    totals[j] += loss
                tokens += count
            scores = {j: totals[j] / max(1, tokens) for j in candidates}
            best = min(candidates, key=lambda j: (scores[j], j))
            removed.append(best)
            history.append(scores)
            bar.advance(task)
    return removed, history
