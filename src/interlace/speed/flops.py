"""Analytic FLOPs of a forward pass, for speedup bounds (used by ``interlace bench`` and ``sweep``).

FLOP model (a multiply-add is 2 FLOPs; norms, activations, RoPE, softmax, embeddings ignored).
A decoder layer on n new tokens after p cached ones (hidden h, a query and g kv heads of size d,
MLP width m, sliding window w or none)::

    2n*h*(a*d + 2g*d) + 2n*a*d*h        q, k, v, o projections
    + 4*a*d*P,  P = sum_{q=p+1}^{p+n} min(q, w)   scores and values over the causal (query, key) pairs
    + 6n*h*m                            gated MLP (MoE: k active experts of width m_e + router 2n*h*E)

lm_head: 2*h*V for one position per forward (generate keeps only the last position's logits).
Vision tower (prefill only), for each image or tile of s patches, width c, depth D, MLP width m_v::

    2s*(C*t*p*p)*c + D*(8s*c*c + 4s*s*c + (4 or 6 if gated)*s*c*m_v)

Projector on i image tokens: Qwen merger 2i*(k*k + k*h) per merger (k = c*merge**2; Qwen3-VL adds
one per DeepStack feature); LLaVA 2i*(c*h + h*h); other families one linear 2i*c*h (approximate).
FLOP bound = FLOPs(A) / FLOPs(B): prefill = vision + projector + decoder(prompt, 0) + lm_head;
decode = the same sum over the measured decode steps (n = 1, p = prompt + j). Time follows FLOPs
only roughly: fixed per-step costs (Python, generate's bookkeeping) pull a speedup below the bound,
per-layer costs outside the count (kernel launches, KV-cache appends) push it toward L_A / L_B.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

GATED_VIT = ("qwen2_5_vl_vision",)  # ViTs with a gated (three-matrix) MLP



@dataclass(frozen=True)
class TokenCounts:
    """Token counts of one prompt; FLOPs are a function of these and the config."""

    text_tokens: int
    image_tokens: int = 0
    vision_seq_lens: tuple[int, ...] = ()  # ViT sequence length of each image or tile

    @property
    def prompt_tokens(self) -> int:
        return self.text_tokens + self.image_tokens


def causal_pairs(past: int, new: int, window: int | None = None) -> int:
    """(query, key) pairs attended by ``new`` tokens after ``past`` cached ones: sum of min(q, window)."""

    def upto(x: int) -> int:  # sum_{q=1}^{x} min(q, window)
        if window is None or x <= window:
            return x * (x + 1) // 2
        return window * (window + 1) // 2 + (x - window) * window

    return upto(past + new) - upto(past)


def layer_flops(text: Any, index: int, new: int, past: int = 0) -> tuple[float, float, float]:
    """FLOPs of decoder layer ``index`` for ``new`` tokens after ``past`` cached ones, in three parts:
    (q, k, v projections; the other linear layers, o and the MLP; the attention products)."""
    h, a = text.hidden_size, text.num_attention_heads
    g = getattr(text, "num_key_value_heads", None) or a
    d = getattr(text, "head_dim", None) or h // a
    kind = (getattr(text, "layer_types", None) or ["full_attention"] * text.num_hidden_layers)[index]
    window = getattr(text, "sliding_window", None) if kind == "sliding_attention" else None
    experts, sparse_step = getattr(text, "num_experts", 0) or 0, getattr(text, "decoder_sparse_step", 1) or 1
    if experts and index not in set(getattr(text, "mlp_only_layers", None) or ()) and (index + 1) % sparse_step == 0:
        mlp = 6 * new * h * text.moe_intermediate_size * text.num_experts_per_tok + 2 * new * h * experts
    else:
        mlp = 6 * new * h * text.intermediate_size
    return 2 * new * h * (a * d + 2 * g * d), 2 * new * a * d * h + mlp, 4 * a * d * causal_pairs(past, new, window)


def decoder_flops(text: Any, new: int, past: int = 0, logits: int = 1) -> float:
    """FLOPs of the decoder stack plus lm_head for ``new`` tokens after ``past`` cached ones."""
    layers = sum(sum(layer_flops(text, i, new, past)) for i in range(text.num_hidden_layers))
    return layers + 2 * text.hidden_size * text.vocab_size * logits


def heal_step_flops(text: Any, seq_lens: Sequence[int], trainable: Collection[int], train_lm_head: bool = False) -> float:
    """FLOPs of one training forward and backward over sequences of ``seq_lens`` tokens (logits at
    every position), when only the ``trainable`` decoder layers (and the lm_head, if asked) learn.

    Backward: the gradient with respect to a linear layer's input costs what its forward costs,
    and the one with respect to its weight as much again; the attention products have two
    activation operands, so their backward costs twice their forward. Activation gradients run
    from the loss down to the lowest trainable layer, whose q, k, v projections need none (their
    input is frozen); weight gradients only in trainable layers. The bound for healing a layer
    set is heal_step_flops(set) / heal_step_flops(all layers) (tests/test_bench.py::test_heal_step_flops_by_hand
    checks the counts; benchmarks/heal_phases.py measures against the bound).
    """
    layers = text.num_hidden_layers
    lowest = min(trainable, default=layers)
    head = 2 * text.hidden_size * text.vocab_size
    total = 0.0
    for n in seq_lens:
        for i in range(layers):
            projections, linear, attention = layer_flops(text, i, n)
            total += projections + linear + attention
            if i >= lowest:
                total += (projections if i > lowest else 0) + linear + 2 * attention
            if i in trainable:
                total += projections + linear
        total += head * n * (1 + bool(trainable) + train_lm_head)
    return total


def vision_flops(config: Any, counts: TokenCounts) -> float:
    """FLOPs of the vision tower and projector for the images in ``counts`` (0 without images)."""
    vision = getattr(config, "vision_config", None)
    if vision is None or not counts.vision_seq_lens:
        return 0.0
    width = getattr(vision, "embed_dim", None) or vision.hidden_size  # Qwen2-VL: hidden_size is the output
    depth = getattr(vision, "depth", None) or vision.num_hidden_layers
    mlp = getattr(vision, "intermediate_size", None) or int(width * vision.mlp_ratio)
    patch = vision.patch_size if isinstance(vision.patch_size, int) else vision.patch_size[0]
    channels = getattr(vision, "in_channels", None) or getattr(vision, "num_channels", 3)
    s = sum(counts.vision_seq_lens)
    total = 2 * s * channels * getattr(vision, "temporal_patch_size", 1) * patch * patch * width
    mlp_mats = 3 if vision.model_type in GATED_VIT else 2
    total += depth * (8 * s * width * width + 4 * width * sum(n * n for n in counts.vision_seq_lens)
                      + 2 * mlp_mats * s * width * mlp)
    text_h, i = config.get_text_config(decoder=True).hidden_size, counts.image_tokens
    merge = getattr(vision, "spatial_merge_size", 1)
    if merge > 1:
        k = width * merge * merge
        mergers = 1 + len(getattr(vision, "deepstack_visual_indexes", None) or ())
        return total + mergers * 2 * i * (k * k + k * text_h)
    if config.model_type in ("llava", "llava_onevision"):
        return total + 2 * i * (width * text_h + text_h * text_h)
    return total + 2 * i * width * text_h


def forward_flops(config: Any, counts: TokenCounts, new_tokens: int) -> tuple[float, float]:
    """(prefill FLOPs, mean decode FLOPs per token) of a ``generate`` of ``new_tokens`` tokens."""
    text, prompt = config.get_text_config(decoder=True), counts.prompt_tokens
    prefill = vision_flops(config, counts) + decoder_flops(text, prompt, 0)
    steps = [decoder_flops(text, 1, prompt + j) for j in range(new_tokens - 1)]
    return prefill, sum(steps) / len(steps)
