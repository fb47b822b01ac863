"""Tiny random-weight models of every supported family, built from configs in code, with inputs.

Each ``Family`` builds a real transformers model class (never a mock) small enough that the whole
surgery matrix runs in a couple of minutes on one CPU thread, and builds a matching input: a real
(synthetic, drawn with PIL) image plus text, as the family's processor would produce it. Where
the processor cannot be built offline (no tokenizer files, and Qwen-VL processors need torchvision
for their video processor), the image still goes through the family's own image processor when
one runs without torchvision, and the token sequence is assembled by hand with the same layout:
the same number of image tokens, the same special tokens around them, and the same extra tensors
(``mm_token_type_ids``, ``image_grid_thw``, ``cross_attention_mask``, ...).

Token ids are shared by all families: 0 pad, 1 bos, 2 eos, 3 image, 4 vision start, 5 vision end,
6 video, 7 begin-of-image, 8 end-of-image; ordinary text uses ids >= 16.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from PIL import Image, ImageDraw
from transformers import (
    CLIPVisionConfig,
    Gemma3Config,
    Gemma3ForCausalLM,
    Gemma3ForConditionalGeneration,
    Gemma3TextConfig,
    GemmaConfig,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    InternVLConfig,
    InternVLForConditionalGeneration,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    MistralConfig,
    MistralForCausalLM,
    MllamaConfig,
    MllamaForConditionalGeneration,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PreTrainedModel,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    SiglipVisionConfig,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
)

PAD, BOS, EOS, IMAGE, VSTART, VEND, VIDEO, BOI, EOI = range(9)
VOCAB = 128
NUM_LAYERS = 6
PADDED_LENGTHS = (7, 4)  # two prompts of different length: row 1 is left-padded

# One text backbone shape for every family: 6 layers, width 64, 4 heads of 16, GQA 2 kv heads.
TEXT = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=NUM_LAYERS,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=512,
    pad_token_id=PAD,
    bos_token_id=BOS,
    eos_token_id=EOS,
    tie_word_embeddings=False,
)
TINY_VIT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
MEAN_STD = dict(image_mean=[0.5] * 3, image_std=[0.5] * 3)


def real_image(size: int = 32) -> Image.Image:
    """A deterministic RGB picture (coloured shapes on a gradient) standing in for a photo."""
    grad = np.linspace(0, 255, size, dtype=np.uint8)
    channels = [np.tile(grad, (size, 1)), np.tile(grad[:, None], (1, size)), np.full((size, size), 96, np.uint8)]
    pixels = np.stack(channels, -1)  # (H, W, 3)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    draw.ellipse([size // 8, size // 8, size // 2, size // 2], fill=(220, 30, 30))
    draw.rectangle([size // 2, size // 2, size - 3, size - 5], fill=(20, 40, 200))
    return image


def normalised(image: Image.Image, size: int) -> torch.Tensor:
    """Resize + rescale to [0, 1] + normalise with mean=std=0.5: what CLIP/SigLIP processors do. (3, H, W)."""
    array = np.asarray(image.resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
    return torch.from_numpy((array - 0.5) / 0.5).permute(2, 0, 1).contiguous()


def text_tokens(n: int, seed: int) -> list[int]:
    return torch.randint(16, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@dataclass(frozen=True)
class Family:
    """One row of the test matrix.

    Attributes:
        name: readable test id.
        model_type: the top-level ``config.model_type``.
        make: builds the random-weight model (eval mode, fp32).
        image_block: returns (tokens of one image in the prompt, per-sample image tensors).
        deepstack: number of DeepStack features (Qwen3-VL), else 0.
    """

    name: str
    model_type: str
    make: Callable[[], PreTrainedModel]
    image_block: Callable[[], tuple[list[int], dict[str, torch.Tensor]]] | None = None
    prefix_image: bool = False  # PaliGemma puts the image before <bos>
    deepstack: int = 0


# ---------------------------------------------------------------- text-only families


def _llama() -> PreTrainedModel:
    return LlamaForCausalLM(LlamaConfig(**TEXT))


def _mistral() -> PreTrainedModel:
    return MistralForCausalLM(MistralConfig(**TEXT, sliding_window=5))


def _qwen2() -> PreTrainedModel:
    # Layers >= max_window_layers use a 5-token sliding window: a mixed layer_types list.
    cfg = {k: v for k, v in TEXT.items() if k != "head_dim"}
    return Qwen2ForCausalLM(Qwen2Config(**cfg, use_sliding_window=True, sliding_window=5, max_window_layers=3))


def _qwen3() -> PreTrainedModel:
    return Qwen3ForCausalLM(Qwen3Config(**TEXT, use_sliding_window=True, sliding_window=5, max_window_layers=2))


def _qwen3_moe() -> PreTrainedModel:
    # MoE on every 2nd layer except layer 3 (mlp_only_layers): both pattern fields matter.
    config = Qwen3MoeConfig(
        **TEXT, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
        decoder_sparse_step=2, mlp_only_layers=[3],
    )
    return Qwen3MoeForCausalLM(config)


def _gemma3_text() -> PreTrainedModel:
    # Every 2nd layer is global attention, the rest slide over 5 tokens.
    config = Gemma3TextConfig(**TEXT, sliding_window=5, sliding_window_pattern=2, query_pre_attn_scalar=16)
    return Gemma3ForCausalLM(config)


# ---------------------------------------------------------------- vision-language families


def _qwen_pixels(patch: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the real image through Qwen2-VL's (PIL) image processor: flattened patches and grid."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    processor = Qwen2VLImageProcessorPil(
        patch_size=patch, merge_size=2, temporal_patch_size=2, min_pixels=side * side, max_pixels=side * side,
        **MEAN_STD,
    )
    out = processor(images=real_image(side), return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"]


def _qwen_block(patch: int) -> Callable[[], tuple[list[int], dict[str, torch.Tensor]]]:
    def block() -> tuple[list[int], dict[str, torch.Tensor]]:
        pixel_values, grid = _qwen_pixels(patch, 4 * patch)  # 4x4 patches -> 2x2 merged = 4 image tokens
        n = int(grid.prod()) // 4
        return [VSTART] + [IMAGE] * n + [VEND], {"pixel_values": pixel_values, "image_grid_thw": grid}

    return block


def _qwen_vl_text(**extra) -> dict:
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    return dict(TEXT, rope_parameters=rope, **extra)


QWEN_IDS = dict(image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VSTART, vision_end_token_id=VEND)


def _qwen2_vl() -> PreTrainedModel:
    vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, patch_size=14)
    text = _qwen_vl_text(use_sliding_window=False)
    return Qwen2VLForConditionalGeneration(Qwen2VLConfig(text_config=text, vision_config=vision, **QWEN_IDS))


def _qwen2_5_vl() -> PreTrainedModel:
    vision = dict(
        depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14, out_hidden_size=64,
        window_size=56, fullatt_block_indexes=[1],
    )
    config = Qwen2_5_VLConfig(text_config=_qwen_vl_text(), vision_config=vision, **QWEN_IDS)
    return Qwen2_5_VLForConditionalGeneration(config)


QWEN3_VL_DEEPSTACK = 3


def _qwen3_vl() -> PreTrainedModel:
    # Three ViT blocks each feed one DeepStack feature into the outputs of LM layers 0, 1, 2.
    vision = dict(
        depth=3, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16, out_hidden_size=64,
        num_position_embeddings=16, deepstack_visual_indexes=[0, 1, 2],
    )
    return Qwen3VLForConditionalGeneration(Qwen3VLConfig(text_config=_qwen_vl_text(), vision_config=vision, **QWEN_IDS))


def _clip_block(n_tokens: int, size: int = 32) -> Callable[[], tuple[list[int], dict[str, torch.Tensor]]]:
    def block() -> tuple[list[int], dict[str, torch.Tensor]]:
        return [IMAGE] * n_tokens, {"pixel_values": normalised(real_image(), size)[None]}

    return block


def _llava() -> PreTrainedModel:
    vision = CLIPVisionConfig(**TINY_VIT, image_size=32, patch_size=8)
    config = LlavaConfig(
        vision_config=vision, text_config=LlamaConfig(**TEXT), image_token_id=IMAGE, image_seq_length=16,
        vision_feature_select_strategy="default", vision_feature_layer=-1,
    )
    return LlavaForConditionalGeneration(config)


def _llava_onevision() -> PreTrainedModel:
    vision = SiglipVisionConfig(**TINY_VIT, image_size=16, patch_size=8)
    text = Qwen2Config(**{k: v for k, v in TEXT.items() if k != "head_dim"})
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=text, image_token_index=IMAGE, video_token_index=VIDEO,
        image_grid_pinpoints=[[16, 16], [16, 32], [32, 16], [32, 32]], vision_aspect_ratio="anyres_max_9",
    )
    return LlavaOnevisionForConditionalGeneration(config)


def _onevision_block() -> tuple[list[int], dict[str, torch.Tensor]]:
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    processor = LlavaOnevisionImageProcessorPil(
        size={"height": 16, "width": 16}, image_grid_pinpoints=[[16, 16], [16, 32], [32, 16], [32, 32]], **MEAN_STD
    )
    out = processor(images=real_image(32), return_tensors="pt")
    # Count the image tokens the way LlavaOnevisionProcessor does: base features + unpadded grid + newlines.
    patches = 16 // 8
    base = patches * patches
    height, width = out["image_sizes"][0].tolist()
    grid_h, grid_w = 32 // 16 * patches, 32 // 16 * patches  # best pinpoint 32x32 -> 2x2 tiles
    # Aspect ratio 1 -> no unpadding; one newline token per row of the grid.
    assert height == width
    n = base + grid_h * grid_w + grid_h
    return [IMAGE] * n, {"pixel_values": out["pixel_values"], "image_sizes": out["image_sizes"]}


def _idefics_like(config_cls, model_cls) -> Callable[[], PreTrainedModel]:
    def make() -> PreTrainedModel:
        vision = dict(**TINY_VIT, image_size=32, patch_size=8)
        config = config_cls(vision_config=vision, text_config=LlamaConfig(**TEXT), image_token_id=IMAGE, scale_factor=2)
        return model_cls(config)

    return make


def _idefics_block() -> tuple[list[int], dict[str, torch.Tensor]]:
    # One global image, no splitting: (32/8)^2 patches / scale_factor^2 = 4 tokens between <boi> <eoi>.
    pixel_values = normalised(real_image(), 32)[None, None]  # (1, num_images, 3, H, W)
    mask = torch.ones(1, 1, 32, 32, dtype=torch.bool)
    return [BOI] + [IMAGE] * 4 + [EOI], {"pixel_values": pixel_values, "pixel_attention_mask": mask}


def _gemma3() -> PreTrainedModel:
    vision = SiglipVisionConfig(**TINY_VIT, image_size=32, patch_size=8)
    text = Gemma3TextConfig(**TEXT, sliding_window=5, sliding_window_pattern=2, query_pre_attn_scalar=16)
    config = Gemma3Config(
        vision_config=vision, text_config=text, mm_tokens_per_image=4, boi_token_index=BOI, eoi_token_index=EOI,
        image_token_index=IMAGE,
    )
    model = Gemma3ForConditionalGeneration(config)
    # A fresh Gemma3 zero-initialises its projector weight, which would make the image invisible.
    with torch.no_grad():
        weight = model.model.multi_modal_projector.mm_input_projection_weight
        weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)) * 0.1)
    return model


def _gemma3_block() -> tuple[list[int], dict[str, torch.Tensor]]:
    # 4x4 SigLIP patches avg-pooled to mm_tokens_per_image=4, between <start_of_image> <end_of_image>.
    return [BOI] + [IMAGE] * 4 + [EOI], {"pixel_values": normalised(real_image(), 32)[None]}


def _internvl() -> PreTrainedModel:
    vision = dict(**TINY_VIT, image_size=[32, 32], patch_size=[8, 8], model_type="internvl_vision")
    text = {**{k: v for k, v in TEXT.items() if k != "head_dim"}, "model_type": "qwen2"}
    config = InternVLConfig(vision_config=vision, text_config=text, image_token_id=IMAGE, image_seq_length=4)
    return InternVLForConditionalGeneration(config)


def _paligemma() -> PreTrainedModel:
    vision = SiglipVisionConfig(**TINY_VIT, image_size=32, patch_size=8, projection_dim=64)
    text = GemmaConfig(**TEXT)
    config = PaliGemmaConfig(vision_config=vision, text_config=text, image_token_id=IMAGE, projection_dim=64)
    return PaliGemmaForConditionalGeneration(config)


def _mllama() -> PreTrainedModel:
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_global_layers=1, attention_heads=2,
        image_size=16, patch_size=8, max_num_tiles=1, supported_aspect_ratios=[[1, 1]],
        intermediate_layers_indices=[0], vision_output_dim=64,
    )
    # Layers 2 and 4 are cross-attention layers (they attend to the image instead of the text).
    text = {k: v for k, v in TEXT.items() if k != "head_dim"} | {"cross_attention_layers": [2, 4]}
    config = MllamaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE)
    model = MllamaForConditionalGeneration(config)
    # Fresh cross-attention layers have tanh gates at 0, which would make the image invisible.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "cross_attn_attn_gate" in name or "cross_attn_mlp_gate" in name:
                param.fill_(1.0)
    return model


def _mllama_block() -> tuple[list[int], dict[str, torch.Tensor]]:
    pixel_values = normalised(real_image(), 16)[None, None, None]  # (B, images, tiles, 3, H, W)
    extras = {
        "pixel_values": pixel_values,
        "aspect_ratio_ids": torch.tensor([[1]]),
        "aspect_ratio_mask": torch.ones(1, 1, 1, dtype=torch.long),
    }
    return [IMAGE], extras


FAMILIES: tuple[Family, ...] = (
    Family("llama", "llama", _llama),
    Family("mistral", "mistral", _mistral),
    Family("qwen2", "qwen2", _qwen2),
    Family("qwen3", "qwen3", _qwen3),
    Family("qwen3_moe", "qwen3_moe", _qwen3_moe),
    Family("gemma3_text", "gemma3_text", _gemma3_text),
    Family("qwen2_vl", "qwen2_vl", _qwen2_vl, _qwen_block(14)),
    Family("qwen2_5_vl", "qwen2_5_vl", _qwen2_5_vl, _qwen_block(14)),
    Family("qwen3_vl", "qwen3_vl", _qwen3_vl, _qwen_block(16), deepstack=QWEN3_VL_DEEPSTACK),
    Family("llava", "llava", _llava, _clip_block(16)),
    Family("llava_onevision", "llava_onevision", _llava_onevision, _onevision_block),
    Family("idefics3", "idefics3", _idefics_like(Idefics3Config, Idefics3ForConditionalGeneration), _idefics_block),
    Family("smolvlm", "smolvlm", _idefics_like(SmolVLMConfig, SmolVLMForConditionalGeneration), _idefics_block),
    Family("gemma3", "gemma3", _gemma3, _gemma3_block),
    Family("internvl", "internvl", _internvl, _clip_block(4)),
    Family("paligemma", "paligemma", _paligemma, _clip_block(16), prefix_image=True),
    Family("mllama", "mllama", _mllama, _mllama_block),
)
BY_NAME = {family.name: family for family in FAMILIES}


@cache
def _dense(name: str) -> PreTrainedModel:
    torch.manual_seed(0)
    return BY_NAME[name].make().eval()


def dense_model(name: str) -> PreTrainedModel:
    """A fresh copy of the family's random-weight model (built once per session, then deep-copied)."""
    return copy.deepcopy(_dense(name))


def make_inputs(family: Family, lengths: tuple[int, ...] = (7,)) -> dict[str, torch.Tensor]:
    """A left-padded batch, one image per sample (VLMs), text of the given lengths.

    Args:
        family: the row of the matrix.
        lengths: number of text tokens of each sample; unequal lengths give a padded batch.

    Returns:
        Model keyword arguments: ``input_ids``, ``attention_mask`` and the family's image tensors.
    """
    rows, extras = [], []
    for i, n in enumerate(lengths):
        text = text_tokens(n, seed=i)
        if family.image_block is None:
            rows.append([BOS] + text)
            continue
        image_tokens, tensors = family.image_block()
        head, tail = text[: n // 2], text[n // 2 :]
        rows.append(image_tokens + [BOS] + text if family.prefix_image else [BOS] + head + image_tokens + tail)
        extras.append(tensors)
    width = max(map(len, rows))
    input_ids = torch.tensor([[PAD] * (width - len(r)) + r for r in rows])
    attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    batch: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if extras:
        for key in extras[0]:
            batch[key] = torch.cat([e[key] for e in extras])
    if family.model_type.startswith("qwen") and family.image_block is not None:
        batch["mm_token_type_ids"] = (input_ids == IMAGE).int()
    if family.model_type == "mllama":
        # Every text token after the image attends to its single tile (processor's dense mask).
        positions = torch.arange(width)[None]
        first = (input_ids == IMAGE).int().argmax(-1, keepdim=True)
        batch["cross_attention_mask"] = (positions >= first).long()[:, :, None, None]
    if family.model_type == "paligemma":
        batch["token_type_ids"] = torch.zeros_like(input_ids)
    return batch
