"""Magnitude and Wanda N:M weight sparsity (Sun et al. 2024, arXiv 2306.11695).

Pure mask functions on tensors, plus the small loop that collects Wanda's input-feature norms
with forward hooks. Only the decoder layers' linear weights are sparsified (the vision tower,
embeddings and lm_head stay dense, as in the paper's baselines). No layers are removed, so there
is no speedup without sparse kernels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from interlace.arch import get_arch
from interlace.methods.plan import Plan
from interlace.scores import RedundancyScores


def nm_mask(scores: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Keep the n highest-scoring of every m consecutive input weights: (out, in) -> bool (out, in).

    Ties keep the lower index (stable sort), so the mask is deterministic.
    """
    if scores.ndim != 2 or scores.shape[1] % m:
        raise ValueError(f"scores must be (out, in) with in divisible by {m}, got {tuple(scores.shape)}")
    if not 0 < n <= m:
        raise ValueError(f"need 0 < n <= m, got {n}:{m}")
    groups = scores.reshape(scores.shape[0], -1, m)
    order = torch.sort(groups, dim=-1, descending=True, stable=True).indices[..., :n]
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, order, True)
    return mask.reshape(scores.shape)


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    """|W|."""
    return weight.detach().abs().float()


def wanda_scores(weight: torch.Tensor, input_norm: torch.Tensor) -> torch.Tensor:
    """|W_ij| * ||X_j||_2, with X_j the j-th input feature over all calibration tokens."""
    if input_norm.shape != (weight.shape[1],):
        raise ValueError(f"input_norm must have {weight.shape[1]} entries, got {tuple(input_norm.shape)}")
    return weight.detach().abs().float() * input_norm.float()[None, :]


def decoder_linears(model: Any) -> dict[str, nn.Linear]:
    """Every nn.Linear inside the decoder layers, by qualified name."""
    layers = get_arch(model).layers
    return {
        f"{i}.{name}": module
        for i, layer in enumerate(layers)
        for name, module in layer.named_modules()
        if isinstance(module, nn.Linear)
    }


@torch.no_grad()
def input_norms(model: Any, batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """||X_j||_2 per input feature of every decoder linear, over the real tokens of ``batches``.

    One pass over the dense model (the one-shot variant; the original Wanda prunes layer by layer
    with pruned inputs, which this skips for simplicity and says so in the manifest).
    """
    linears = decoder_linears(model)
    squares = {name: torch.zeros(m.in_features, dtype=torch.float64) for name, m in linears.items()}
    mask_holder: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(module, args):
            x = args[0]
            mask = mask_holder["mask"]
            if x.ndim == 3 and x.shape[:2] == mask.shape:
                x = x[mask.bool()]
            squares[name] += x.reshape(-1, x.shape[-1]).double().pow(2).sum(0).cpu()

        return record

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in linears.items()]
    try:
        for batch in batches:
            mask_holder["mask"] = batch["attention_mask"]
            model(**batch, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return {name: s.sqrt().float() for name, s in squares.items()}


@torch.no_grad()
def apply_nm_sparsity(model: Any, method: str, norms: dict[str, torch.Tensor] | None = None, n: int = 2, m: int = 4) -> dict:
    """Zero all but n of every m input weights of each decoder linear, **in place**.

    Args:
        model: the model to sparsify (mutated).
        method: "magnitude" or "wanda" (needs ``norms`` from ``input_norms``).
        norms: Wanda's input norms per linear name.
        n, m: the N:M pattern (2:4 by default).

    Returns:
        {"linears": count, "zeroed": fraction of their weights now zero}.
    """
    if method not in ("magnitude", "wanda"):
        raise ValueError(f"method must be magnitude or wanda, got {method!r}")
    if method == "wanda" and norms is None:
        raise ValueError("wanda needs input norms; compute them with input_norms(model, batches)")
    total = zeroed = 0
    linears = decoder_linears(model)
    for name, linear in linears.items():
        weight = linear.weight
        scores = magnitude_scores(weight) if method == "magnitude" else wanda_scores(weight, norms[name])
        weight.mul_(nm_mask(scores, n, m).to(weight.dtype))
        total += weight.numel()
        zeroed += int((weight == 0).sum())
    return {"linears": len(linears), "zeroed": zeroed / max(1, total)}


def sparsity_plan(name: str):
    """The plan of a sparsity method: no layer removed or healed (``apply_sparsity`` does the work)."""

    def run(scores: RedundancyScores, ratio: float, **_) -> Plan:
        return Plan(method=name, num_layers=scores.num_layers, dropped=[], finetuned=[], anchors=[], path="2:4")

    return run


def apply_sparsity(name: str, model, processor, calib, batch_size: int = 8) -> dict:
    """Zero 2 of every 4 decoder weights in place (magnitude-2:4 or wanda-2:4)."""
    from interlace.data.chat import batch_inputs

    norms = None
    if name == "wanda-2:4":
        device = next(model.parameters()).device
        batches = [
            {k: v.to(device) for k, v in inputs.items()}
            for i in range(0, len(calib), batch_size)
            for _, inputs in batch_inputs(processor, calib[i : i + batch_size])
        ]
        norms = input_norms(model, batches)
    return apply_nm_sparsity(model, name.split("-")[0], norms)
