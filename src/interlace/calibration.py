"""Calibration: run the dense model on prompts and score every layer's redundancy (arXiv 2511.19676, method).

Forward hooks on each decoder layer capture the residual stream entering it (and the last layer's
output), so the states are pre-norm and include Qwen3-VL's DeepStack injections, unlike
``output_hidden_states``. The scores themselves are computed in ``interlace.scores``.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from interlace.arch import get_arch
from interlace.data.chat import batch_inputs, conversation_text, is_plain, prompt_text, tokenizer_of
from interlace.files import write_atomic
from interlace.progress import progress as progress_bar
from interlace.scores import RedundancyScores, SimilarityAccumulator
from interlace.typecheck import expect


def _hidden(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, (tuple, list)) else value


def length_order(processor: Any, samples: Sequence[dict], with_answers: bool = False) -> list[int]:
    """Sample indices ordered so consecutive samples share a modality and have similar lengths.

    Calibration batches pad to their longest sample; in file order that is a quarter of the
    tokens on pydocs. Every sample weighs the same in the scores, so the order changes them only
    by float rounding. The key is (plain text or chat, number of images, text tokens): image
    tokens are not counted, which is exact for processors with a fixed number of tokens per image
    (LLaVA) and close for the FineVision-sized images of dynamic-resolution ones (Qwen-VL, capped
    at max_pixels). The sort is stable, so equal keys keep their file order.
    """
    tokenizer = tokenizer_of(processor)
    render = conversation_text if with_answers else prompt_text

    def key(index: int) -> tuple[bool, int, int]:
        sample = samples[index]
        text_tokens = len(tokenizer(render(processor, sample), add_special_tokens=False)["input_ids"])
        return is_plain(sample), len(sample["images"]), text_tokens

    return sorted(range(len(samples)), key=key)


@torch.no_grad()
def compute_scores(
    model: Any,
    processor: Any,
    samples: Sequence[dict],
    ks: tuple[int, ...] = (1, 2, 3),
    batch_size: int = 8,
    with_answers: bool = False,
    progress: bool = True,
    length_grouping: bool = True,
) -> RedundancyScores:
    """s_k(i) of every decoder layer of ``model`` on calibration ``samples``.

    Args:
        model: a loaded transformers model of a supported family (see ``interlace archs``).
        processor: its processor or tokenizer; prompts go through its chat template.
        samples: chat or plain-text samples, with or without images; each weighs the same.
        ks: the distances k to score (1, 2, 3 for INTERLACE).
        batch_size: samples per forward pass (padding is masked out of the means).
        with_answers: score whole conversations instead of prompts only.
        progress: report progress (``interlace.progress``).
        length_grouping: batch samples of similar length together (``length_order``) instead of
            in the given order; the scores differ only by float rounding, with less padding.

    Returns:
        RedundancyScores over the model's L + 1 residual states.
    """
    expect(model, torch.nn.Module, "model", "a loaded transformers model")
    expect(samples, (list, tuple), "samples", "a list of sample dicts (from load_samples)")
    if not samples:
        raise ValueError("calibration needs at least one sample")
    layers = get_arch(model).layers
    accumulator = SimilarityAccumulator(len(layers), ks)
    last = len(layers) - 1

    def on_input(module, args, kwargs):
        accumulator.add_state(_hidden(args[0] if args else kwargs["hidden_states"]))

    def on_output(module, args, kwargs, output):
        accumulator.add_state(_hidden(output))

    handles = [layer.register_forward_pre_hook(on_input, with_kwargs=True) for layer in layers]
    handles.append(layers[last].register_forward_hook(on_output, with_kwargs=True))
    device = next(model.parameters()).device
    # The scores need the residual states, not the logits: project only the last position onto the
    # vocabulary. Over every position that is a fifth of SmolLM2's forward and (B, T, 49152) fp32
    # logits, most of what calibration added to memory.
    no_logits = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    if length_grouping:
        samples = [samples[i] for i in length_order(processor, samples, with_answers)]
    was_training = model.training
    model.eval()
    try:
        with progress_bar("calibrating", len(samples), enabled=progress, unit="samples") as bar:
            for start in range(0, len(samples), batch_size):
                chunk = samples[start : start + batch_size]
                for _, inputs in batch_inputs(processor, chunk, with_answers):  # one call per modality
                    inputs = {k: v.to(device) for k, v in inputs.items()}
                    accumulator.start_batch(inputs["attention_mask"])
                    model(**inputs, use_cache=False, **no_logits)
                    accumulator.end_batch()
                bar.advance(len(chunk))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    scores = accumulator.result(meta={"prompt_only": not with_answers, "ks": list(ks)})
    k = min(scores.similarity)  # s_k(i) compares the states before layer i and after layer i + k - 1
    broken = [i + k - 1 for i, value in enumerate(scores.similarity[k]) if not math.isfinite(value)]
    if broken:  # every rule would rank garbage, and a plan that happened to cut the bad layer out would verify
        from interlace.heal.loop import NonFiniteLossError

        raise NonFiniteLossError.in_dense_model(f"hidden states are NaN or inf from layer {broken[0]} on")
    return scores


def save_scores(scores: RedundancyScores, path: str | Path) -> None:
    write_atomic(path, json.dumps(scores.to_json(), indent=2) + "\n")


def load_scores(path: str | Path) -> RedundancyScores:
    return RedundancyScores.from_json(json.loads(Path(path).read_text()))


def plot_scores(scores: RedundancyScores, path: str | Path, title: str = "layer redundancy") -> None:
    """S1 and S3 per start layer (and S2 when present), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    for k, style in ((1, "o-"), (2, "s--"), (3, "^-")):
        if k in scores.similarity:
            values = scores.s(k, use_final_state=True)
            ax.plot(range(len(values)), values, style, label=f"S{k}: cos(h_i, h_i+{k})", markersize=4)
    ax.set_xlabel("start layer i")
    ax.set_ylabel("mean cosine similarity")
    ax.set_title(f"{title} ({scores.num_samples} samples)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
