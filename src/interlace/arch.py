"""Where each supported architecture keeps its decoder layers, and how its config describes them.

This is the one module that knows architectures: a table keyed by
``config.model_type`` plus a generic fallback through ``model.get_decoder()``. Everything else
(surgery, the offline cutter, scoring hooks) asks this module where the layers are and how the
config changes when some of them go. Adding a family is adding a row here and a tiny model to
``tests/tiny_models.py``.

Per-layer information in a transformers 5 text config (``config.get_text_config(decoder=True)``,
as of transformers 5.25) comes in three shapes:

- lists with one entry per layer (``layer_types``, ``mlp_layer_types``, ``no_rope_layers``):
  sliced by kept index;
- lists of layer indices (``cross_attention_layers``, ``mlp_only_layers``, ``moe_layers``):
  remapped to the new positions;
- pattern integers (``max_window_layers``, ``decoder_sparse_step``, Gemma3's
  ``sliding_window_pattern``): recomputed, or replaced by the explicit list they imply.

Qwen3-VL's DeepStack lives in the *vision* config: ``deepstack_visual_indexes[d]`` names the ViT
block whose features are added to the output of decoder layer ``d`` (by loop position).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel

PER_LAYER_LISTS = ("layer_types", "mlp_layer_types", "no_rope_layers")
INDEX_LISTS = ("cross_attention_layers", "mlp_only_layers", "moe_layers")
PATTERN_FIELDS = ("max_window_layers", "decoder_sparse_step", "sliding_window_pattern")
# Written into the text config of every cut model: the original index of each remaining layer.
KEPT_FIELD = "interlace_kept_layers"


@dataclass(frozen=True)
class Family:
    """One row of the architecture table.

    Attributes:
        name: human name of the family.
        model_types: top-level ``config.model_type`` values served by this row.
        layers_path: attribute path of the decoder ``nn.ModuleList`` in transformers 5.
        checkpoint_prefixes: key prefixes of the layer weights in a saved safetensors checkpoint
            (transformers 5 saves several VLMs in their legacy key layout).
        special: what needs care when layers are removed.
    """

    name: str
    model_types: tuple[str, ...]
    layers_path: str
    checkpoint_prefixes: tuple[str, ...]
    special: str


_LM = ("model.layers",)
# transformers 5 saves several VLMs in their pre-v5 key layout; try the new one first.
_VLM = ("model.language_model.layers", "language_model.model.layers", "model.layers")

_LANG = "model.language_model.layers"
_TEXT = "model.text_model.layers"

TABLE: tuple[Family, ...] = (
    Family("Llama", ("llama",), "model.layers", _LM, "plain decoder; renumber self_attn.layer_idx"),
    Family("Mistral", ("mistral",), "model.layers", _LM, "one sliding window for every layer; no per-layer list"),
    Family(
        "Qwen2", ("qwen2",), "model.layers", _LM,
        "layers >= max_window_layers slide when use_sliding_window: layer_types sliced, max_window_layers recomputed",
    ),
    Family("Qwen3", ("qwen3",), "model.layers", _LM, "as Qwen2: sliding-window layers via layer_types"),
    Family(
        "Qwen3-MoE", ("qwen3_moe",), "model.layers", _LM,
        "MoE vs dense MLP set by decoder_sparse_step + mlp_only_layers: rewritten as explicit mlp_only_layers, step 1",
    ),
    Family(
        "Gemma3 (text)", ("gemma3_text",), "model.layers", _LM,
        "sliding/global attention pattern (sliding_window_pattern) written out as explicit layer_types",
    ),
    Family("Qwen2-VL", ("qwen2_vl",), _LANG, _VLM, "M-RoPE needs mm_token_type_ids; checkpoint uses legacy keys"),
    Family("Qwen2.5-VL", ("qwen2_5_vl",), _LANG, _VLM, "as Qwen2-VL (window attention is in the ViT only)"),
    Family(
        "Qwen3-VL", ("qwen3_vl",), _LANG, _VLM,
        "DeepStack: ViT features are added to the outputs of LM layers 0..D-1 by loop position; removing one "
        "drops its feature and merger (realign) or is refused (protect)",
    ),
    Family("LLaVA", ("llava",), _LANG, _VLM, "any text backbone via AutoModel; checkpoint uses legacy keys"),
    Family("LLaVA-OneVision", ("llava_onevision",), _LANG, _VLM, "Qwen2 backbone; anyres image tiles"),
    Family("Idefics3", ("idefics3",), _TEXT, (_TEXT,), "Llama backbone under text_model"),
    Family("SmolVLM", ("smolvlm",), _TEXT, (_TEXT,), "as Idefics3"),
    Family(
        "Gemma3", ("gemma3",), _LANG, _VLM,
        "sliding pattern as Gemma3 text; fresh models zero the projector (tests randomise it)",
    ),
    Family("InternVL (HF)", ("internvl",), _LANG, _VLM, "Qwen2 backbone; pixel-shuffle projector"),
    Family("PaliGemma", ("paligemma",), _LANG, _VLM, "Gemma backbone; image tokens before <bos>"),
    Family(
        "Mllama (Llama 3.2 Vision)", ("mllama",), _LANG, _VLM,
        "cross-attention layers found by position via cross_attention_layers: remapped in the config and on the "
        "text model; layer_idx renumbered in self- and cross-attention; the first kept layer must be "
        "self-attention (transformers reads the cache length from layer 0)",
    ),
)
BY_MODEL_TYPE: dict[str, Family] = {t: family for family in TABLE for t in family.model_types}


class UnsupportedModelError(ValueError):
    """The model's architecture is neither in the table nor reachable through ``get_decoder()``."""


@dataclass(frozen=True)
class ArchInfo:
    """What surgery needs to know about one loaded model.

    Attributes:
        model_type: top-level ``config.model_type``.
        family: the table row's name, or ``"generic"`` for the ``get_decoder()`` fallback.
        layers: the decoder layer list (the model's own ``nn.ModuleList``, not a copy).
        layers_path: its attribute path from the model, e.g. ``model.language_model.layers``.
        decoder: the module that owns ``layers`` and runs the loop over them.
        text_config: ``config.get_text_config(decoder=True)``, the object the decoder reads.
        protected: layers that must not be removed under the chosen policy (Qwen3-VL DeepStack
            layers with ``deepstack="protect"``; empty otherwise).
        special: layer index -> why the layer needs care.
        per_layer_fields: config fields present on this model that carry per-layer information.
        notes: the table row's description of what is special.
    """

    model_type: str
    family: str
    layers: nn.ModuleList
    layers_path: str
    decoder: nn.Module
    text_config: PreTrainedConfig
    protected: tuple[int, ...]
    special: dict[int, str] = field(default_factory=dict)
    per_layer_fields: tuple[str, ...] = ()
    notes: str = ""


def supported_families() -> list[dict[str, Any]]:
    """The table as plain dicts (for ``interlace archs`` and the docs)."""
    return [
        {"name": f.name, "model_types": list(f.model_types), "layers": f.layers_path, "special": f.special}
        for f in TABLE
    ]


def _unsupported(model_type: str, why: str) -> UnsupportedModelError:
    known = ", ".join(sorted(BY_MODEL_TYPE))
    return UnsupportedModelError(
        f"model_type {model_type!r} is not supported ({why}). Supported model types: {known}. "
        "To add one, add a row to interlace.arch.TABLE and a tiny model to tests/tiny_models.py."
    )


def deepstack_count(config: PreTrainedConfig) -> int:
    """Number of DeepStack features (Qwen3-VL), i.e. decoder layers 0..D-1 that receive one; else 0."""
    vision = getattr(config, "vision_config", None)
    return len(getattr(vision, "deepstack_visual_indexes", None) or ())


def special_layers(config: PreTrainedConfig) -> dict[int, str]:
    """Decoder layers that need care when removed, with the reason, read from the config alone."""
    text = config.get_text_config(decoder=True)
    special = {d: f"receives DeepStack feature {d}" for d in range(deepstack_count(config))}
    for index in getattr(text, "cross_attention_layers", None) or ():
        special[index] = "cross-attention layer"
    return dict(sorted(special.items()))


def per_layer_fields(model_type: str, text: PreTrainedConfig) -> tuple[str, ...]:
    """Names of the per-layer fields present in ``text``.

    Raises:
        UnsupportedModelError: a list-valued field with "layer" in its name that this module does
            not know how to edit (editing the rest would leave that one stale).
    """
    if getattr(text, "is_heterogeneous", False):
        raise _unsupported(model_type, "its text config is heterogeneous (per_layer_config overrides)")
    known = set(PER_LAYER_LISTS + INDEX_LISTS + (KEPT_FIELD,))
    present = [name for name in PER_LAYER_LISTS + INDEX_LISTS + PATTERN_FIELDS if getattr(text, name, None) is not None]
    for name, value in text.to_dict().items():
        if "layer" in name and isinstance(value, list) and name not in known:
            raise _unsupported(model_type, f"its text config has a per-layer field {name!r} that interlace cannot edit")
    return tuple(present)


def get_arch(model: PreTrainedModel, *, deepstack: str = "realign") -> ArchInfo:
    """Locate the decoder layers of a loaded model and describe its per-layer config.

    Args:
        model: a transformers model (``...ForCausalLM``, ``...ForConditionalGeneration`` or a base model).
        deepstack: the DeepStack policy the caller will cut with; under ``"protect"`` the Qwen3-VL
            DeepStack layers are listed in ``protected`` (under ``"realign"`` they are removable).

    Returns:
        ArchInfo for the model; ``layers`` is the model's own ModuleList.

    Raises:
        UnsupportedModelError: the model type is not in the table and ``get_decoder()`` finds no
            ``layers`` list, or its config has a per-layer field this module does not know.
    """
    if deepstack not in ("realign", "protect"):
        raise ValueError(f"deepstack={deepstack!r} is not a policy; use 'realign' or 'protect'")
    config = model.config
    model_type = config.model_type
    family = BY_MODEL_TYPE.get(model_type)
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise _unsupported(model_type, "model.get_decoder() has no `layers` ModuleList")
    path = next(name for name, module in model.named_modules() if module is layers)
    text = config.get_text_config(decoder=True)
    if len(layers) != text.num_hidden_layers:
        raise ValueError(
            f"{model_type}: the decoder has {len(layers)} layers but num_hidden_layers is {text.num_hidden_layers}; "
            "the model was edited without updating its config. Reload it from a checkpoint written by interlace."
        )
    return ArchInfo(
        model_type=model_type,
        family=family.name if family else "generic",
        layers=layers,
        layers_path=path,
        decoder=decoder,
        text_config=text,
        protected=tuple(range(deepstack_count(config))) if deepstack == "protect" else (),
        special=special_layers(config),
        per_layer_fields=per_layer_fields(model_type, text),
        notes=family.special if family else "generic fallback through get_decoder(); not in the tested table",
    )


def plan_kept(config: PreTrainedConfig, drop: Sequence[int], *, deepstack: str = "realign") -> list[int]:
    """Validate a drop list against a config and return the kept (current) layer indices.

    Args:
        config: the model's top-level config.
        drop: decoder layer indices to remove, in the model's current numbering.
        deepstack: ``"realign"`` drops the DeepStack feature of a removed layer; ``"protect"``
            refuses to remove DeepStack layers.

    Returns:
        Sorted indices of the layers that stay.

    Raises:
        ValueError: out-of-range, duplicate or non-integer index, all layers removed, a protected
            DeepStack layer, an unknown ``deepstack`` policy, or (Mllama) a cut that leaves a
            cross-attention layer first.
    """
    if deepstack not in ("realign", "protect"):
        raise ValueError(f"deepstack={deepstack!r} is not a policy; use 'realign' or 'protect'")
    n = config.get_text_config(decoder=True).num_hidden_layers
    drop = list(drop)
    try:  # accept numpy / torch integers (selection code often returns them), refuse floats and bools
        if any(isinstance(i, bool) for i in drop):
            raise TypeError
        drop = [operator.index(i) for i in drop]
    except TypeError:
        raise ValueError(f"layer indices must be integers, got {drop}") from None
    if bad := [i for i in drop if not 0 <= i < n]:
        raise ValueError(f"layer indices {bad} are out of range: the model has {n} decoder layers (0..{n - 1})")
    if len(set(drop)) != len(drop):
        raise ValueError(f"duplicate layer indices in {drop}; list each layer once")
    if len(set(drop)) == n:
        raise ValueError(f"cannot remove all {n} decoder layers; keep at least one")
    depth = deepstack_count(config)
    if deepstack == "protect" and (hit := sorted(i for i in drop if i < depth)):
        raise ValueError(
            f"layers {hit} receive DeepStack visual features (layers 0..{depth - 1}) and deepstack='protect' forbids "
            "removing them; drop other layers or use deepstack='realign' to drop their features too"
        )
    kept = [i for i in range(n) if i not in set(drop)]
    cross = set(getattr(config.get_text_config(decoder=True), "cross_attention_layers", None) or ())
    if kept[0] in cross:
        # transformers reads the cache length from layer 0 (cache.get_seq_length()); a cross-attention
        # layer there caches vision states, so positions and masks of cached generation go wrong.
        raise ValueError(
            f"after removing {sorted(drop)} the first decoder layer would be cross-attention layer {kept[0]}; "
            "transformers reads the cache length from layer 0, which breaks cached generation. "
            f"Keep at least one self-attention layer before layer {kept[0]}"
        )
    return kept


def cut_config(config: PreTrainedConfig, kept: Sequence[int]) -> dict[str, Any]:
    """Edit a config in place so it describes the model made of the ``kept`` decoder layers.

    The single implementation shared by in-memory surgery and the offline checkpoint cutter.

    Args:
        config: top-level config; its text config (and Qwen3-VL vision config) are mutated.
        kept: sorted current indices of the layers that stay.

    Returns:
        ``{field: new value}`` for every text-config field that changed, plus
        ``"deepstack_visual_indexes"`` when DeepStack features were dropped.
    """
    text = config.get_text_config(decoder=True)
    n = text.num_hidden_layers
    changes: dict[str, Any] = {"num_hidden_layers": len(kept)}

    # Pattern integers first: turn them into the explicit lists they imply for the full model.
    if getattr(text, "decoder_sparse_step", None) is not None and getattr(text, "num_experts", 0):
        step, dense = text.decoder_sparse_step, set(getattr(text, "mlp_only_layers", None) or ())
        text.mlp_only_layers = [i for i in range(n) if i in dense or (i + 1) % step != 0]
        changes["decoder_sparse_step"] = 1
    if getattr(text, "max_window_layers", None) is not None:
        # Qwen2/3: layer i slides iff i >= max_window_layers, a suffix; kept order keeps it a suffix.
        changes["max_window_layers"] = sum(k < text.max_window_layers for k in kept)

    for name in PER_LAYER_LISTS:
        value = getattr(text, name, None)
        if value is not None:
            changes[name] = [value[k] for k in kept]
    for name in INDEX_LISTS:
        value = getattr(text, name, None)
        if value is not None:
            changes[name] = [p for p, k in enumerate(kept) if k in set(value)]
    original = getattr(text, KEPT_FIELD, None) or list(range(n))
    changes[KEPT_FIELD] = [original[k] for k in kept]

    for name, value in changes.items():
        setattr(text, name, value)
    if getattr(text, "layer_types", None) is not None:
        # Gemma3's legacy period cannot describe a cut pattern; the explicit layer_types above wins
        # on reload anyway, so drop the stale integer rather than save a misleading one. transformers
        # 5.x keeps it twice: as given, and as the private copy Gemma3TextConfig.__post_init__ reads
        # (``_sliding_window_pattern``), which to_dict() writes into config.json too.
        for name in ("sliding_window_pattern", "_sliding_window_pattern"):
            if name in vars(text):
                delattr(text, name)
                changes[name.lstrip("_")] = None

    vision = getattr(config, "vision_config", None)
    depth = deepstack_count(config)
    if depth and (gone := [d for d in range(depth) if d not in set(kept)]):
        # Feature d feeds loop position d. Kept layers below D stay a prefix of the new order, so
        # deleting the features of removed layers keeps every other feature on its original layer.
        indexes = [v for d, v in enumerate(vision.deepstack_visual_indexes) if d not in gone]
        vision.deepstack_visual_indexes = indexes
        changes["deepstack_visual_indexes"] = indexes
    return changes


_LAYER_KEY = re.compile(r"^(.*layers)\.(\d+)\.")


def checkpoint_layer_prefix(config: PreTrainedConfig, keys: Iterable[str]) -> str:
    """The key prefix of the decoder layers in a saved checkpoint, e.g. ``language_model.model.layers``.

    transformers 5 saves several VLMs in their legacy key layout, so the prefix on disk can differ
    from the module path; the table lists the layouts each family uses.

    Args:
        config: the checkpoint's top-level config.
        keys: every tensor name in the checkpoint.

    Returns:
        The prefix P such that the decoder layer i weights are ``P.{i}.*``.

    Raises:
        UnsupportedModelError: no (or, for an unknown model type, more than one) candidate prefix
            holds exactly ``num_hidden_layers`` layers.
    """
    n = config.get_text_config(decoder=True).num_hidden_layers
    found: dict[str, set[int]] = {}
    for key in keys:
        if match := _LAYER_KEY.match(key):
            found.setdefault(match[1], set()).add(int(match[2]))
    family = BY_MODEL_TYPE.get(config.model_type)
    if family is not None:
        candidates = list(family.checkpoint_prefixes)
    else:
        candidates = [p for p in found if not re.search(r"vision|visual|vit|audio", p)]
    matches = [p for p in candidates if found.get(p) == set(range(n))]
    if len(matches) == 1 or (family is not None and matches):
        return matches[0]
    layouts = {p: len(v) for p, v in found.items()}
    raise _unsupported(
        config.model_type, f"no unique decoder-layer prefix with {n} layers among the checkpoint's {layouts}"
    )
