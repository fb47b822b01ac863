"""Build the embedded tiny VLM's tokenizer, processor and config from scratch.

The embedded model is a real ``LlavaForConditionalGeneration`` (CLIP vision tower, two-layer
projector, Qwen3 decoder) with a word-level tokenizer over the suite's closed vocabulary. Why LLaVA
and not Qwen3-VL: ``Qwen3VLProcessor`` requires a video processor, and transformers' video
processors need torchvision, which on a CPU-only x86_64 machine means a multi-GB CUDA torch. The
LLaVA processor needs only PIL, so the embedded default installs and runs anywhere.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen3Config,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from interlace.data import vqa

PAD, BOS, EOS, IMAGE, UNK = "<pad>", "<|im_start|>", "<|im_end|>", "<image>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, IMAGE, UNK)

# Same shape as ChatML (Qwen's template): the image comes first in the user turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }} "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image> "
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %} <|im_end|> "
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)

CONTENT_WORDS = (
    "user assistant system how many are there more than what is the of cell share a with row column "
    "sum two digits largest three thing things nothing digit yes no ? left right above below"
)


# Words only the trainer's training-only questions use (scripts/embedded_tasks.py). The shipped
# tokenizer has them, last, so that every other token kept the id it had before they came.
PRIMER_WORDS = "where at in"


def vocabulary() -> list[str]:
    """The closed vocabulary: special tokens, template words, colours, shapes, numbers 0..20, primer words."""
    words = CONTENT_WORDS.split() + list(vqa.COLOURS) + list(vqa.SHAPES) + [str(n) for n in range(21)]
    words += PRIMER_WORDS.split()
    seen: dict[str, None] = dict.fromkeys(SPECIAL_TOKENS)
    seen.update(dict.fromkeys(words))
    return list(seen)


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: index for index, token in enumerate(vocabulary())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with single spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        extra_special_tokens={"image_token": IMAGE},
        padding_side="left",  # decoder-only generation wants left padding
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [BOS, EOS, IMAGE]})
    return tokenizer


def build_processor(chat_template: str = CHAT_TEMPLATE) -> LlavaProcessor:
    size = {"height": vqa.IMAGE_SIZE, "width": vqa.IMAGE_SIZE}
    image_processor = CLIPImageProcessorPil(
        size=size, crop_size=size, do_center_crop=False, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=build_tokenizer(),
        chat_template=chat_template,
        patch_size=vqa.CELL,  # one patch per grid cell, so one image token per object
        vision_feature_select_strategy="default",  # drop CLIP's CLS token
        num_additional_image_tokens=1,
    )


DECODERS = {"llama": LlamaConfig, "qwen3": Qwen3Config}


def build_config(
    hidden_size: int = 128,
    num_layers: int = 12,
    vision_hidden_size: int = 96,
    vision_layers: int = 2,
    decoder: str = "qwen3",
) -> LlavaConfig:
    """The embedded model's config: CLIP tower, LLaVA projector, a ``decoder`` text model.

    ``decoder="qwen3"`` is what ships. ``"llama"`` is the same shape without Qwen3's per-head
    query/key norm, which at head_dim 32 caps an attention logit near sqrt(32) ~ 5.7 times the
    norm weights (those weights stayed within 1.0 +- 0.17 in the shipped model). Both decoders
    plateaued alike when it was tried (docs/embedded_history.md), so the cap did not hold it back.
    """
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; choose from {', '.join(DECODERS)}")
    tokenizer = build_tokenizer()
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden_size,
        intermediate_size=4 * vision_hidden_size,
        num_hidden_layers=vision_layers,
        num_attention_heads=max(1, vision_hidden_size // 32),
        image_size=vqa.IMAGE_SIZE,
        patch_size=vqa.CELL,
    )
    text = DECODERS[decoder](
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=3 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=hidden_size // 32,
        num_key_value_heads=max(1, hidden_size // 64),
        head_dim=32,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=vqa.GRID * vqa.GRID,
        tie_word_embeddings=True,
    )
