"""Turn samples into model inputs through the model's own processor or tokenizer.

Two kinds of sample reach a model:

- a *chat* sample, FineVision's schema: ``{"images": [PIL...], "texts": [{"user", "assistant"}, ...],
  "source"}``. Images go first in the first user turn (FineVision's convention). It is rendered
  with the checkpoint's chat template, never a rewritten one: VLM processors and many templates
  take a message's content as a list of parts, most text-LLM templates (SmolLM2, Llama 3, Qwen2.5,
  Mistral) as a string; which one a template takes is found by rendering a probe message
  (``content_style``). A checkpoint with no chat template gets "User: ...\\nAssistant: ..." lines.
  The loss covers assistant tokens only: each assistant span is the difference between the
  conversation rendered up to the turn's generation prompt and rendered through the turn, which
  holds for any prefix-stable template.
- a *plain-text* sample: ``{"images": [], "texts": [], "text": str, "source"}``, a passage of
  running text. It is tokenized as is (with the tokenizer's own special tokens, e.g. BOS) and
  every token is a target.

``processor`` is a VLM processor or a bare tokenizer: both have ``apply_chat_template`` and are
called with ``text=``. Samples with and without images never share a processor call (VLM
processors refuse or misplace empty image lists), so batch builders split a batch by modality
(``modality_groups``); every consumer (scores, losses) weighs samples, not calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

IGNORE_INDEX = -100
# Per-token tensors that are padded when samples are batched; everything else is concatenated.
SEQUENCE_KEYS = ("input_ids", "attention_mask", "labels", "mm_token_type_ids", "token_type_ids")
ContentStyle = Literal["parts", "string", "none"]
_PROBE = "interlace-probe-3141"


def is_plain(sample: dict) -> bool:
    """Whether a sample is running text (``text``) rather than a conversation (``texts``)."""
    return isinstance(sample.get("text"), str)


def tokenizer_of(processor: Any) -> Any:
    return getattr(processor, "tokenizer", processor)


def _template(processor: Any) -> str | None:
    template = getattr(processor, "chat_template", None) or getattr(tokenizer_of(processor), "chat_template", None)
    return template if isinstance(template, str) else None


_STYLES: dict[tuple[str, str], ContentStyle] = {}  # (processor class, template) -> style


def content_style(processor: Any) -> ContentStyle:
    """What the checkpoint's chat template takes as message content: "parts", "string", or "none"
    when there is no template. Found once per (processor class, template) by rendering a probe.

    Raises:
        ValueError: the template renders a probe message neither way.
    """
    template = _template(processor)
    if template is None:
        return "none"
    key = (type(processor).__qualname__, template)
    if key not in _STYLES:
        _STYLES[key] = _detect_style(processor)
    return _STYLES[key]


def _detect_style(processor: Any) -> ContentStyle:
    parts = [{"role": "user", "content": [{"type": "text", "text": _PROBE}]}]
    try:
        text = processor.apply_chat_template(parts, add_generation_prompt=True, tokenize=False)
        # a string-only template may print the list's repr instead of failing
        if _PROBE in text and "'type'" not in text and '"type"' not in text:
            return "parts"
    except Exception:  # noqa: BLE001 - jinja raises TypeError, UndefinedError, TemplateError...
        pass
    string = [{"role": "user", "content": _PROBE}]
    kind = type(processor).__name__
    try:
        if _PROBE in processor.apply_chat_template(string, add_generation_prompt=True, tokenize=False):
            return "string"
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"the chat template of this checkpoint ({kind}) renders no user message: {error}") from None
    raise ValueError(f"the chat template of this checkpoint ({kind}) drops the user's text; check its chat_template")


def to_messages(sample: dict, with_answers: bool = True, style: ContentStyle = "parts") -> list[dict]:
    """Chat messages for a sample; with_answers=False keeps only the first user turn (a prompt).

    Raises:
        ValueError: the sample has images but the template takes string content (a text-only model).
    """
    if sample["images"] and style != "parts":
        raise ValueError(
            f"a sample from {sample.get('source') or 'the data'} has {len(sample['images'])} image(s) but this "
            "checkpoint's chat template takes text only; use text-only data (images: []) for a text model"
        )
    messages: list[dict] = []
    for turn_index, turn in enumerate(sample["texts"]):
        if style == "parts":
            images = [{"type": "image"} for _ in sample["images"]] if turn_index == 0 else []
            user: Any = [*images, {"type": "text", "text": turn["user"]}]
            answer: Any = [{"type": "text", "text": turn["assistant"]}]
        else:
            user, answer = turn["user"], turn["assistant"]
        messages.append({"role": "user", "content": user})
        if not with_answers:
            break
        messages.append({"role": "assistant", "content": answer})
    return messages


def _plain_render(messages: list[dict], add_generation_prompt: bool) -> str:
    """No chat template: one "User:" / "Assistant:" line per message (prefix-stable)."""
    lines = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages)
    return lines + ("Assistant:" if add_generation_prompt else "")


def render(processor: Any, messages: list[dict], add_generation_prompt: bool, style: ContentStyle | None = None) -> str:
    """Messages (built by ``to_messages`` for ``style``) as the text the model reads."""
    style = style or content_style(processor)
    if style == "none":
        return _plain_render(messages, add_generation_prompt)
    return processor.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)


def prompt_text(processor: Any, sample: dict) -> str:
    """The first user turn rendered with the generation prompt (scoring, evaluation); a plain-text
    sample is its own prompt."""
    if is_plain(sample):
        return sample["text"]
    style = content_style(processor)
    return render(processor, to_messages(sample, with_answers=False, style=style), True, style)


def conversation_text(processor: Any, sample: dict) -> str:
    """The whole conversation rendered (a plain-text sample: its text)."""
    if is_plain(sample):
        return sample["text"]
    style = content_style(processor)
    return render(processor, to_messages(sample, style=style), False, style)


def _special_tokens(processor: Any, samples: Sequence[dict]) -> bool:
    """Rendered chat templates carry their own special tokens (transformers tokenizes them with
    add_special_tokens=False too); running text gets the tokenizer's (BOS)."""
    return all(is_plain(s) for s in samples) or content_style(processor) == "none"


def tokenize(processor: Any, samples: Sequence[dict], texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Processor inputs for texts rendered from samples of one modality (see ``modality_groups``)."""
    with_images = [s["images"] for s in samples]
    kwargs: dict[str, Any] = {"text": list(texts), "return_tensors": "pt", "padding": True}
    kwargs["add_special_tokens"] = _special_tokens(processor, samples)
    if any(with_images):
        assert all(with_images), "a processor call mixes samples with and without images"
        kwargs["images"] = with_images if len(texts) > 1 else with_images[0]
    return dict(processor(**kwargs))


def modality_groups(samples: Sequence[dict]) -> list[list[int]]:
    """Indices of ``samples`` grouped so a group shares one processor call: plain text, chat
    without images, chat with images; order kept within each group."""
    groups: dict[tuple[bool, bool], list[int]] = {}
    for index, sample in enumerate(samples):
        groups.setdefault((is_plain(sample), bool(sample["images"])), []).append(index)
    return list(groups.values())


def batch_inputs(processor: Any, samples: Sequence[dict], with_answers: bool = False) -> list[tuple[list[int], dict[str, torch.Tensor]]]:
    """Model inputs for a batch: prompts only (the paper's calibration) or whole conversations.

    Returns:
        One (indices into samples, inputs) pair per modality group.
    """
    render_one = conversation_text if with_answers else prompt_text
    out = []
    for group in modality_groups(samples):
        chunk = [samples[i] for i in group]
        out.append((group, tokenize(processor, chunk, [render_one(processor, s) for s in chunk])))
    return out


def encode_for_training(processor: Any, sample: dict) -> dict[str, torch.Tensor]:
    """Model inputs for one sample (batch dim 1, no padding) with ``labels`` on its target tokens.

    Returns:
        The processor's outputs (input_ids, attention_mask, pixel_values, ...) plus labels: every
        token of a plain-text sample, the assistant replies of a chat sample (IGNORE_INDEX else).
    """
    if is_plain(sample):
        encoded = tokenize(processor, [sample], [sample["text"]])
        encoded["labels"] = encoded["input_ids"].clone()
        return encoded
    style = content_style(processor)
    messages = to_messages(sample, style=style)
    encoded = tokenize(processor, [sample], [render(processor, messages, False, style)])
    input_ids = encoded["input_ids"][0]
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start_text = render(processor, messages[:index], True, style)
        end_text = render(processor, messages[: index + 1], False, style)
        start, end = (len(tokenize(processor, [sample], [t])["input_ids"][0]) for t in (start_text, end_text))
        labels[start:end] = input_ids[start:end]
    encoded["labels"] = labels[None]
    return encoded


def collate(encoded: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad per-sample sequences; concatenate everything else (pixels, grids) along dim 0.

    All encodings must share their keys (one modality); ``collate_groups`` handles a mixed list.
    """
    keys = set(encoded[0])
    assert all(set(e) == keys for e in encoded), "collate mixes encodings of different modalities"
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


def collate_groups(encoded: list[dict[str, torch.Tensor]], pad_id: int) -> list[dict[str, torch.Tensor]]:
    """``collate`` per group of encodings with the same keys (e.g. with and without pixel_values)."""
    groups: dict[tuple[str, ...], list[dict[str, torch.Tensor]]] = {}
    for item in encoded:
        groups.setdefault(tuple(sorted(item)), []).append(item)
    return [collate(group, pad_id) for group in groups.values()]


def training_batches(processor: Any, samples: list[dict], batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Whole samples encoded with target labels, collated into batches of at most batch_size
    (a batch that mixes modalities becomes one batch per modality)."""
    pad_id = tokenizer_of(processor).pad_token_id
    encoded = [encode_for_training(processor, sample) for sample in samples]
    batches = []
    for i in range(0, len(encoded), batch_size):
        batches += collate_groups(encoded[i : i + batch_size], pad_id)
    return batches
