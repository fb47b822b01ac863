"""Turn FineVision-schema samples into model inputs through the model's own processor.

A sample is ``{"images": [PIL...], "texts": [{"user": str, "assistant": str}, ...], "source": str}``.
Images go first in the first user turn (FineVision's convention). The loss covers assistant tokens
only: each assistant span is found as the difference between the chat template rendered up to the
turn's generation prompt and rendered through the turn, which holds for any prefix-stable template.
"""

from __future__ import annotations

from typing import Any

import torch

IGNORE_INDEX = -100
# Per-token tensors that are padded when samples are batched; everything else is concatenated.
SEQUENCE_KEYS = ("input_ids", "attention_mask", "labels", "mm_token_type_ids", "token_type_ids")


def to_messages(sample: dict, with_answers: bool = True) -> list[dict]:
    """Chat messages for a sample; with_answers=False keeps only the first user turn (a prompt)."""
    messages: list[dict] = []
    for turn_index, turn in enumerate(sample["texts"]):
        content: list[dict] = []
        if turn_index == 0:
            content += [{"type": "image"} for _ in sample["images"]]
        content.append({"type": "text", "text": turn["user"]})
        messages.append({"role": "user", "content": content})
        if not with_answers:
            break
        messages.append({"role": "assistant", "content": [{"type": "text", "text": turn["assistant"]}]})
    return messages


def prompt_text(processor: Any, sample: dict) -> str:
    """The first user turn rendered with the generation prompt, as used for scoring and evaluation."""
    return processor.apply_chat_template(to_messages(sample, with_answers=False), add_generation_prompt=True)


def _tokenize(processor: Any, texts: list[str], images: list) -> dict[str, torch.Tensor]:
    kwargs = {"text": texts, "return_tensors": "pt", "padding": True}
    if images:
        kwargs["images"] = [images] * len(texts) if len(texts) > 1 else images
    return processor(**kwargs)


def encode_for_training(processor: Any, sample: dict) -> dict[str, torch.Tensor]:
    """Model inputs for one sample (batch dim 1, no padding) with ``labels`` on assistant tokens.

    Returns:
        The processor's outputs (input_ids, attention_mask, pixel_values, ...) plus labels, where
        every token outside an assistant reply is IGNORE_INDEX.
    """
    messages = to_messages(sample)
    full = processor.apply_chat_template(messages, add_generation_prompt=False)
    encoded = _tokenize(processor, [full], sample["images"])
    input_ids = encoded["input_ids"][0]
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start_text = processor.apply_chat_template(messages[:index], add_generation_prompt=True)
        end_text = processor.apply_chat_template(messages[: index + 1], add_generation_prompt=False)
        start, end = (len(_tokenize(processor, [t], sample["images"])["input_ids"][0]) for t in (start_text, end_text))
        labels[start:end] = input_ids[start:end]
    encoded["labels"] = labels[None]
    return dict(encoded)


def collate(encoded: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad per-sample sequences; concatenate everything else (pixels, grids) along dim 0."""
    batch: dict[str, torch.Tensor] = {}
    length = max(e["input_ids"].shape[1] for e in encoded)
    for key in encoded[0]:
        values = [e[key] for e in encoded]
        if key in SEQUENCE_KEYS:
            fill = {"input_ids": pad_id, "labels": IGNORE_INDEX}.get(key, 0)
            batch[key] = torch.cat(
                [torch.nn.functional.pad(v, (0, length - v.shape[1]), value=fill) for v in values]
            )
        else:
            batch[key] = torch.cat(values)
    return batch


def training_batches(processor: Any, samples: list[dict], batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Whole conversations encoded with answer-token labels and collated into batches."""
    tokenizer = getattr(processor, "tokenizer", processor)
    encoded = [encode_for_training(processor, sample) for sample in samples]
    return [collate(encoded[i : i + batch_size], tokenizer.pad_token_id) for i in range(0, len(encoded), batch_size)]
