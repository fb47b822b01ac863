"""Cut decoder layers out of a saved safetensors checkpoint without instantiating the model.

The offline twin of ``interlace.surgery.remove_layers`` for checkpoints too big for the machine:
it edits ``config.json`` with the same ``interlace.arch.cut_config`` and streams the weights shard
by shard, one tensor at a time (peak memory ~ the largest tensor), renaming layer keys
``P.{old}.*`` -> ``P.{new}.*`` and, for Qwen3-VL, ``deepstack_merger_list.{k}`` the same way.
The result is written to a temporary directory beside ``dst`` and renamed into place, so ``dst``
either is complete or does not exist.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from interlace.arch import checkpoint_layer_prefix, cut_config, deepstack_count, per_layer_fields, plan_kept
from interlace.files import writing
from interlace.loading import check_model, read_config

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
# Weight files are never copied: the cut safetensors replace them (a stale .bin would shadow nothing
# in transformers 5, but would ship the removed layers).
_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt"}
_DEEPSTACK_KEY = re.compile(r"^(.*deepstack_merger_list)\.(\d+)\.(.*)$")
_ITEM_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
              "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def rename_key(key: str, prefix: str, layer_map: dict[int, int], feature_map: dict[int, int]) -> str | None:
    """New name of a checkpoint tensor after the cut, or None when it belongs to a removed layer/feature.

    Args:
        key: tensor name in the source checkpoint.
        prefix: decoder layer prefix (``checkpoint_layer_prefix``).
        layer_map: kept old layer index -> new index.
        feature_map: kept old DeepStack feature index -> new index (empty for other models).
    """
    head = prefix + "."
    if key.startswith(head):
        index, _, rest = key[len(head) :].partition(".")
        if index.isdigit():
            new = layer_map.get(int(index))
            return None if new is None else f"{head}{new}.{rest}"
    if feature_map and (match := _DEEPSTACK_KEY.match(key)):
        new = feature_map.get(int(match[2]))
        return None if new is None else f"{match[1]}.{new}.{match[3]}"
    return key


def _write_streaming(path: Path, handle, plan: list[tuple[str, str]], metadata: dict[str, str] | None) -> int:
    """Write tensors ``handle[old]`` as ``new`` into a safetensors file, one tensor in memory at a time.

    The header (names, dtypes, shapes, byte offsets) is computed from the source's metadata
    before any data is read; the format is 8-byte little-endian header length, JSON header padded
    to 8 bytes, then the raw tensors back to back. Returns the number of data bytes written.
    """
    header: dict[str, object] = {}
    offset = 0
    for old, new in plan:
        view = handle.get_slice(old)
        dtype, shape = view.get_dtype(), view.get_shape()
        size = math.prod(shape) * _ITEM_SIZE[dtype] if dtype in _ITEM_SIZE else handle.get_tensor(old).nbytes
        header[new] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = metadata
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(blob)))
        out.write(blob)
        for old, _ in plan:
            tensor = handle.get_tensor(old).contiguous()
            out.write(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return offset


def _shards(src: Path) -> tuple[list[str], dict | None]:
    if (src / INDEX_NAME).is_file():
        index = json.loads((src / INDEX_NAME).read_text())
        return sorted(set(index["weight_map"].values())), index
    if (src / SINGLE_NAME).is_file():
        return [SINGLE_NAME], None
    raise FileNotFoundError(
        f"{src} has no {SINGLE_NAME} or {INDEX_NAME}; the cutter reads safetensors only. "
        "Re-save the model with save_pretrained() (safetensors is the default) and try again"
    )


def cut_checkpoint(
    src: str | Path, dst: str | Path, drop: Sequence[int], *, deepstack: str = "realign", check: Callable[[Path], Any] | None = None
) -> Path:
    """Write a copy of checkpoint ``src`` without decoder layers ``drop`` to ``dst``.

    Gives the same config and weights as loading ``src``, calling ``remove_layers(model, drop)``
    and saving. Tokenizer, processor, chat template and generation config files are copied.

    Args:
        src: checkpoint directory (config.json + safetensors, single file or sharded).
        dst: output directory; must not exist yet.
        drop: decoder layer indices to remove (numbering of ``src``).
        deepstack: Qwen3-VL policy, as in ``remove_layers``: ``"realign"`` or ``"protect"``.
        check: called on the finished copy before it is renamed to ``dst`` (``interlace.evaluation.verify.verify``
            in `interlace cut`); when it raises, nothing is left.

    Returns:
        ``dst`` as a Path.

    Raises:
        FileNotFoundError: ``src`` has no config.json or no safetensors weights.
        ModelNotFoundError: an unreadable config, a weight shard missing or cut off, or tensors,
            JSON files or a tokenizer that disagree with the config (``interlace.loading.check_model``).
        FileExistsError: ``dst`` already exists.
        ValueError: invalid ``drop`` (see ``interlace.arch.plan_kept``).
        UnsupportedModelError: the layer keys or per-layer config fields are not understood.
        WriteError: ``dst``'s disk is full or its directory read-only; nothing is left.
    """
    src, dst = Path(src), Path(dst)
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src} has no config.json; pass a checkpoint directory written by save_pretrained")
    if dst.exists():
        raise FileExistsError(f"{dst} already exists; choose a new output directory or delete it first")
    shards, index = _shards(src)
    config = read_config(src)  # trust_remote_code=False: refuses auto_map code, never prompts
    per_layer_fields(config.model_type, config.get_text_config(decoder=True))
    kept = plan_kept(config, drop, deepstack=deepstack)
    depth = deepstack_count(config)
    layer_map = {old: new for new, old in enumerate(kept)}
    feature_map = {old: new for new, old in enumerate(d for d in range(depth) if d in layer_map)}

    check_model(str(src))  # every shard there and readable, its tensors the ones the config needs
    keys: list[str] = []
    for shard in shards:
        with safe_open(src / shard, framework="pt") as handle:
            keys += list(handle.keys())
    prefix = checkpoint_layer_prefix(config, keys)
    cut_config(config, kept)

    made = next((p for p in reversed(dst.absolute().parents) if not p.exists()), None)
    tmp = None
    try:
        with writing(str(dst), "pass a destination on another disk"):
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent))
            # mkdtemp makes the directory 0700 (private by design); the result is an ordinary output
            # folder, so give it the mode mkdir would (0777 less the umask), as `prune` writes.
            tmp.chmod(0o777 & ~_umask())
            _write_copy(src, tmp, shards, index, lambda key: rename_key(key, prefix, layer_map, feature_map))
            config.save_pretrained(tmp)
        if check is not None:
            check(tmp)
        tmp.rename(dst)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if made is not None:  # directories this call created for dst: nothing of it is left
            shutil.rmtree(made, ignore_errors=True)
        raise
    return dst


def _write_copy(src: Path, tmp: Path, shards: list[str], index: dict | None, rename: Callable[[str], str | None]) -> None:
    """Write the cut weights (and index) and copy the other non-weight files of ``src`` into ``tmp``."""
    weight_map: dict[str, str] = {}
    total = 0
    for shard in shards:
        with safe_open(src / shard, framework="pt") as handle:
            plan = [(k, new) for k in handle.keys() if (new := rename(k))]
            if plan:  # a shard that held only removed layers is simply not written
                total += _write_streaming(tmp / shard, handle, plan, handle.metadata())
                weight_map.update({new: shard for _, new in plan})
    if index is not None:
        metadata = {**index.get("metadata", {}), "total_size": total}
        index = {"metadata": metadata, "weight_map": dict(sorted(weight_map.items()))}
        (tmp / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    for path in src.iterdir():
        if path.is_file() and path.suffix not in _WEIGHT_SUFFIXES and path.name not in (INDEX_NAME, "config.json"):
            shutil.copy2(path, tmp / path.name)


def _umask() -> int:
    """The process umask (reading it means setting it: put it straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
