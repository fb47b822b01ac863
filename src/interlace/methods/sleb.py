"""SLEB (Song et al. 2024, arXiv 2402.09025): remove, one at a time, the block whose removal hurts
calibration loss the least, re-scoring after every removal.

Cost. For each removal step and calibration batch, one forward of the current model
(removed layers skipped) caches every layer's output. The trial of candidate j then

- replays the layers below j from the cache (their states do not depend on j),
- skips j and the removed layers without computing them (a pass-through, not a discarded
  forward), and runs only the kept layers above j,
- projects onto the vocabulary only at the labelled positions (``logits_to_keep``), a chunk of
  positions at a time (``interlace.lm_loss``), so no (tokens, V) fp32 logits are held at once.
  The head's share of a forward is 2CV / (per-layer FLOPs x L + 2CV) per labelled token: about a
  fifth for SmolLM2-135M (C=576, V=49k, 30 layers), and most of it for Gemma 3 270M (C=640,
  V=262k, 18 layers), where the labelled positions, not the layers skipped, set a trial's cost.

So candidate j costs (kept layers above j) / L of the decoder plus the lm_head at labelled tokens
(about half a forward on average with a small vocabulary), and a step one more forward for the cache. Candidates are not
batched into one forward: each skips a different layer, which HF's decoder loop cannot do per
row, and batching would not change the FLOPs.

A 25% SLEB of a 30-layer model is 189 trials (over an hour on one CPU core for SmolLM2-135M), so
each finished removal step can be saved to a ``state`` file, and a rerun on the same inputs goes on
from the last saved step with the same result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from interlace.arch import get_arch
from interlace.files import write_atomic
from interlace.lm_loss import labelled_ce_sum
from interlace.methods.plan import Plan, drop_budget, plan_from_drops
from interlace.progress import PROGRESS
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
    """Summed next-token cross-entropy over the labelled tokens of ``batch``, and their count; the
    head runs at labelled positions only, a chunk at a time (``interlace.lm_loss``)."""
    return labelled_ce_sum(model, {k: v for k, v in batch.items() if k != "labels"}, batch["labels"])


def _fingerprint(batches: Sequence[dict[str, torch.Tensor]], num_layers: int, protected: Sequence[int]) -> str:
    """What a saved state must have been computed on: the layer count, protected layers and every
    tensor of every batch, bit for bit."""
    digest = hashlib.sha256(json.dumps([num_layers, sorted(protected)]).encode())
    for batch in batches:
        for key in sorted(batch):
            digest.update(key.encode())
            digest.update(batch[key].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


def _load_state(state: Path | None, inputs: str, num_layers: int, protected: Sequence[int] = ()) -> tuple[list[int], list[dict[int, float]]]:
    """The removal steps saved in ``state`` for these ``inputs``; none when absent, for other
    inputs, or not a removal order this model could have taken (a layer out of range, protected or
    removed twice, a step without its losses): the selection then starts over and rewrites it."""
    if state is None or not state.is_file():
        return [], []
    try:
        saved = json.loads(state.read_text())
        if saved.get("inputs") != inputs:
            return [], []
        removed = [int(j) for j in saved["removed"]]
        history = [{int(j): float(v) for j, v in h.items()} for h in saved["history"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        return [], []  # unreadable (a file from elsewhere)
    possible = set(range(num_layers)) - set(protected)
    if len(set(removed)) != len(removed) or not set(removed) <= possible or len(history) != len(removed):
        return [], []
    return removed, history


def _save_state(state: Path, inputs: str, removed: list[int], history: list[dict[int, float]]) -> None:
    """Write the finished steps atomically: a kill mid-write leaves the previous state."""
    write_atomic(state, json.dumps({"inputs": inputs, "removed": removed, "history": history}))


@torch.no_grad()
def sleb_order(
    model: Any,
    batches: Sequence[dict[str, torch.Tensor]],
    budget: int,
    protected: Sequence[int] = (),
    progress: bool = True,
    state: str | Path | None = None,
) -> tuple[list[int], list[dict[int, float]]]:
    """Greedy SLEB removal order on calibration ``batches`` (with ``labels`` on answer tokens).

    Args:
        state: a JSON file that holds the finished steps. Steps saved there for the same model
            depth, protected layers and batches are taken as done; every finished step is saved.

    Returns:
        (removed layers in removal order, per step {candidate: mean loss}).
    """
    layers = get_arch(model).layers
    state = Path(state) if state is not None else None
    inputs = _fingerprint(batches, len(layers), protected) if state is not None else ""
    removed, history = _load_state(state, inputs, len(layers), protected)
    removed, history = removed[:budget], history[:budget]
    free = [j for j in range(len(layers)) if j not in protected]
    tuple_layers: set[int] = set()
    model.eval()
    progress = progress and not PROGRESS.quiet
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("trials"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=True) as bar:
        trials = [(len(free) - step) * len(batches) for step in range(budget)]
        task = bar.add_task("SLEB", total=sum(trials), completed=sum(trials[: len(removed)]))
        for step in range(len(removed), budget):
            bar.update(task, description=f"SLEB removal {step + 1}/{budget}")
            started = time.perf_counter()
            candidates = [j for j in free if j not in removed]
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
                    bar.advance(task)
                tokens += count
            scores = {j: totals[j] / max(1, tokens) for j in candidates}
            best = min(candidates, key=lambda j: (scores[j], j))
            removed.append(best)
            history.append(scores)
            if state is not None:
                _save_state(state, inputs, removed, history)
            if progress:  # a line per step, also where the bar cannot redraw (a log file, CI)
                bar.print(f"  SLEB removal {step + 1}/{budget}: layer {best} (loss {scores[best]:.4f}) in {time.perf_counter() - started:.0f}s")
    return removed, history


def loss_batches(model: Any, processor: Any, samples: Sequence[dict], batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
    """``samples`` encoded with labels on their answer tokens and collated on the model's device."""
    from interlace.data.chat import collate_groups, encode_for_training, tokenizer_of

    device = next(model.parameters()).device
    # The loss is a sum over tokens, so batching samples of similar length changes only rounding and
    # the padding every trial computes on (a quarter of the tokens of 64 pydocs passages in file order).
    encoded = sorted((encode_for_training(processor, s) for s in samples), key=lambda e: e["input_ids"].shape[1])
    pad_id = tokenizer_of(processor).pad_token_id
    return [
        {k: v.to(device) for k, v in batch.items()}
        for start in range(0, len(encoded), batch_size)
        for batch in collate_groups(encoded[start : start + batch_size], pad_id)
    ]


@torch.no_grad()
def mean_loss(model: Any, batches: Sequence[dict[str, torch.Tensor]], skipped: Sequence[int] = ()) -> float:
    """Mean next-token cross-entropy over the labelled tokens of ``batches``, with the ``skipped``
    decoder layers passing their input through (the loss of the model they would be cut from)."""
    model.eval()
    total, tokens = 0.0, 0
    with identity_hooks(model, list(skipped)):
        for batch in batches:
            loss, count = _loss_sum(model, batch)
            total, tokens = total + loss, tokens + count
    return total / max(1, tokens)


def sleb(scores: RedundancyScores, ratio: float, protected=(), model=None, processor=None, calib=None, batch_size: int = 8,
         state: str | Path | None = None, **_) -> Plan:
    """Iterative: remove the block whose removal raises calibration loss least, re-score, repeat.
    ``state``: where the finished removal steps are saved and resumed from (``sleb_order``)."""
    if model is None or processor is None or not calib:
        raise ValueError("sleb needs the model, its processor and calibration samples with answers")
    n = scores.num_layers
    batches = loss_batches(model, processor, calib, batch_size)
    budget = drop_budget(ratio, n)
    resumed = min(budget, len(_load_state(Path(state), _fingerprint(batches, n, protected), n, protected)[0])) if state is not None else 0
    removed, history = sleb_order(model, batches, budget, tuple(protected), state=state)
    plan = plan_from_drops("sleb", n, removed)
    if resumed:
        plan.log.append(f"{resumed} of {budget} removal steps taken from the interrupted run ({state})")
    plan.log.append(f"removal order {removed}; loss after each removal {[round(h[r], 4) for h, r in zip(history, removed)]}")
    return plan
