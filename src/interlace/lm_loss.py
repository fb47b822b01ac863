"""Next-token cross-entropy of a whole model without its logits over every position.

A forward of a causal LM ends in the output head, (B, T, C) -> (B, T, V) logits. With a large
vocabulary those logits dominate memory: Gemma 3's 262k entries in fp32 are 1 MiB per token, so a
batch of 8 x 512 tokens holds 4 GiB of logits (and cross_entropy a log-softmax copy of them),
where the 270M model's weights are 1 GiB. ``labelled_ce_sum`` runs the model's own forward up to
the head, keeps the hidden states of the labelled positions only, and projects them onto the
vocabulary a chunk of positions at a time, so the extra memory is bounded by ``max_logit_bytes``
whatever the batch, the length or the vocabulary.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from interlace.data.chat import IGNORE_INDEX

# Bytes of fp32 logits (and as many for cross_entropy's log-softmax) per chunk: 64 positions at
# 262k entries, 341 at SmolLM2's 49k; a (64, 640) x (640, 262k) product already runs at matmul speed.
MAX_LOGIT_BYTES = 2**26


@contextlib.contextmanager
def _capture_head_input(model: Any) -> Iterator[list[torch.Tensor]]:
    """Make the output head return a (..., 1) placeholder and record its input hidden states.

    The model's forward runs unchanged up to the head (norms, DeepStack, vision towers), so the
    captured states are what the head would have projected.
    """
    head = model.get_output_embeddings()
    captured: list[torch.Tensor] = []

    def forward(hidden: torch.Tensor) -> torch.Tensor:
        captured.append(hidden)
        return hidden.new_zeros(*hidden.shape[:-1], 1)

    previous = vars(head).get("forward")  # accelerate's device hooks live there (device_map models)
    head.forward = forward  # an instance attribute shadows the class's forward
    try:
        yield captured
    finally:
        if previous is None:
            del head.forward
        else:
            head.forward = previous


def head_logits(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    """The model's logits for ``hidden`` (N, C): its output head, then the final soft-capping that
    Gemma 2 configs set (``final_logit_softcapping``: cap * tanh(logits / cap), as in transformers'
    Gemma2ForCausalLM.forward); fp32 (N, V)."""
    logits = model.get_output_embeddings()(hidden).float()
    cap = getattr(model.config.get_text_config(decoder=True), "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def chunked_ce_sum(model: Any, hidden: torch.Tensor, targets: torch.Tensor, max_logit_bytes: int = MAX_LOGIT_BYTES) -> torch.Tensor:
    """Summed cross-entropy of ``targets`` (N,) under the logits of ``hidden`` (N, C), computed
    a chunk of rows at a time so that at most ``max_logit_bytes`` of fp32 logits exist at once."""
    vocab = model.get_output_embeddings().weight.shape[0]
    rows = max(1, max_logit_bytes // (4 * vocab))
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], rows):
        logits = head_logits(model, hidden[start : start + rows])  # (rows, V)
        total += F.cross_entropy(logits, targets[start : start + rows], reduction="sum")
    return total


@torch.no_grad()
def labelled_ce_sum(model: Any, inputs: dict[str, torch.Tensor], labels: torch.Tensor, max_logit_bytes: int = MAX_LOGIT_BYTES) -> tuple[float, int]:
    """Summed next-token cross-entropy over the labelled tokens of a batch, and their count.

    Args:
        model: a transformers causal LM or VLM (anything with ``get_output_embeddings``).
        inputs: its forward's inputs (input_ids, attention_mask, pixel_values, ...), no labels.
        labels: (B, T) token ids, IGNORE_INDEX where nothing is predicted; position t of the
            model predicts ``labels[:, t + 1]``.
        max_logit_bytes: the most fp32 logits held at once.
    """
    targets = labels[:, 1:]  # (B, T-1)
    labelled = targets != IGNORE_INDEX
    scored = F.pad(labelled, (0, 1))  # (B, T): the positions whose logits count
    keep = {"logits_to_keep": scored} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    with _capture_head_input(model) as captured:
        model(**inputs, use_cache=False, **keep)
    hidden = captured[-1]
    if not keep:  # an old forward: every position reached the head
        hidden = hidden[scored]
    hidden = hidden.reshape(-1, hidden.shape[-1])  # (N, C), rows in (b, t) order
    target = targets[labelled]  # (N,), the same order
    return chunked_ce_sum(model, hidden, target, max_logit_bytes).item(), target.numel()
