"""SLEB (Song et al. 2024, arXiv 2402.09025): remove, one at a time, the block whose removal hurts
calibration loss the least, re-scoring after every removal.

Cost (issue 17). For each removal step and calibration batch, one forward of the current model
(removed layers skipped) caches every layer's output. The trial of candidate j then

- replays the layers below j from the cache (their states do not depend on j),
- skips j and the removed layers without computing them (a pass-through, not a discarded
  forward), and runs only the kept layers above j,
- projects onto the vocabulary only at the labelled positions (``logits_to_keep``): with a 49k
  vocabulary the lm_head over every position costs a fifth of a whole forward.

So candidate j costs (kept layers above j) / L of the decoder plus the lm_head at labelled tokens,
about half a forward on average, and a step one more forward for the cache. Candidates are not
batched into one forward: each skips a different layer, which HF's decoder loop cannot do per
row, and batching would not change the FLOPs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Sequence
from typing import Any

import torch
from rich.progress import Progress

from interlace.arch import get_arch
from interlace.data.chat import IGNORE_INDEX
from interlace.methods.plan import Plan, drop_budget, plan_from_drops
from interlace.scores import RedundancyScores
from interlace.surgery import identity_hooks


@contextlib.contextmanager
def _shortcut(layers, outputs: dict[int, Any], upto: int, skipped: Collection[int], tuple_layers: Collection[int]):
    """Layers below ``upto`` return their cached ``outputs``; ``skipped`` layers (above it) return
    their input without computing. ``tuple_layers`` return (hidden_states, ...) (older transformers)."""

    def replay(out):
        return lambda *args, **kwargs: out

    def passthrough(as_tuple: bool):
        def forward(*args, **kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            return (hidden,) if as_tuple else hidden

        return forward

    originals = {}
    try:
        for i, layer in enumerate(layers):
            if i < upto:
                originals[i], layer.forward = layer.forward, replay(outputs[i])
            elif i in skipped:
                originals[i], layer.forward = layer.forward, passthrough(i in tuple_layers)
        yield
    finally:
        for i, forward in originals.items():
            layers[i].forward = forward


def _layer_outputs(model: Any, layers, batch: dict[str, torch.Tensor], removed: Sequence[int], tuple_layers) -> dict[int, Any]:
    """Every decoder layer's output on ``batch`` with the ``removed`` layers skipped (no lm_head)."""
    outputs: dict[int, Any] = {}
    handles = [layer.register_forward_hook(lambda m, a, out, i=i: outputs.__setitem__(i, out)) for i, layer in enumerate(layers)]
    try:
        with identity_hooks(model, removed), _shortcut(layers, outputs, 0, removed, tuple_layers):
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            model(**inputs, use_cache=False, logits_to_keep=1)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def _loss_sum(model: Any, batch: dict[str, torch.Tensor]) -> tuple[float, int]:
    """Summed next-token cross-entropy over the labelled tokens of ``batch``, and their count."""
    labels = batch["labels"][:, 1:]  # (B, T-1): position t predicts labels[:, t + 1]
    labelled = labels != IGNORE_INDEX
    scored = torch.nn.functional.pad(labelled, (0, 1))  # (B, T): the positions whose logits count
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False, logits_to_keep=scored).logits  # (N, V), rows in (b, t) order
    targets = labels[labelled]  # (N,), same order
    loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
    return loss.item(), targets.numel()


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
    tuple_layers: set[int] = set()
    model.eval()
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("SLEB", total=budget)
        for _ in range(budget):
            candidates = [j for j in range(len(layers)) if j not in removed and j not in protected]
            totals = dict.fromkeys(candidates, 0.0)
            tokens = 0
            for batch in batches:
                outputs = _layer_outputs(model, layers, batch, removed, tuple_layers)
                if not removed:  # every layer ran: learn which ones return tuples
                    tuple_layers = {i for i, out in outputs.items() if isinstance(out, tuple)}
                for j in candidates:
                    with identity_hooks(model, removed + [j]), _shortcut(layers, outputs, j, {*removed, j}, tuple_layers):
                        loss, count = _loss_sum(model, batch)
                    totals[j] += loss
                tokens += count
            scores = {j: totals[j] / max(1, tokens) for j in candidates}
            best = min(candidates, key=lambda j: (scores[j], j))
            removed.append(best)
            history.append(scores)
            bar.advance(task)
    return removed, history


def sleb(scores: RedundancyScores, ratio: float, protected=(), model=None, processor=None, calib=None, batch_size: int = 8, **_) -> Plan:
    """Iterative: remove the block whose removal raises calibration loss least, re-score, repeat."""
    from interlace.data.chat import collate_groups, encode_for_training, tokenizer_of

    if model is None or processor is None or not calib:
        raise ValueError("sleb needs the model, its processor and calibration samples with answers")
    n = scores.num_layers
    device = next(model.parameters()).device
    # The loss is a sum over tokens, so batching samples of similar length changes only rounding and
    # the padding every trial computes on (a quarter of the tokens of 64 pydocs passages in file order).
    encoded = sorted((encode_for_training(processor, s) for s in calib), key=lambda e: e["input_ids"].shape[1])
    pad_id = tokenizer_of(processor).pad_token_id
    batches = [
        {k: v.to(device) for k, v in batch.items()}
        for start in range(0, len(encoded), batch_size)
        for batch in collate_groups(encoded[start : start + batch_size], pad_id)
    ]
    removed, history = sleb_order(model, batches, drop_budget(ratio, n), tuple(protected))
    plan = plan_from_drops("sleb", n, removed)
    plan.log.append(f"removal order {removed}; loss after each removal {[round(h[r], 4) for h, r in zip(history, removed)]}")
    return plan
