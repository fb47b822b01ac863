"""Remove whole decoder layers from a loaded model, or make them identity for a reference run.

``remove_layers`` is pure surgery (no scoring): it deletes layers, renumbers every ``layer_idx``,
and edits the config through ``interlace.arch.cut_config`` (the same function the offline cutter
uses), so the result reloads with plain ``from_pretrained`` and caches correctly
(tests/test_surgery_matrix.py::test_save_reload_is_identical and
::test_cached_generation_equals_uncached).

``identity_hooks`` is the reference the tests compare against, and what SLEB-style scoring uses:
the dense model with the same layers turned into identity maps by forward hooks. A pruned model
must produce exactly (bitwise, in fp32) the outputs of the hooked dense model.

What "the same result" means for Qwen3-VL DeepStack: the dense model adds ViT feature ``d`` to the
output of decoder layer ``d`` (d < D). When layer ``d`` is removed with ``deepstack="realign"``,
its feature and merger are removed too, and every other feature stays on the layer it fed
before. The matching reference therefore makes layer ``d`` identity *and* silences feature ``d``
(its merger outputs zeros, so the injection adds exactly 0).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from interlace.arch import KEPT_FIELD, cut_config, deepstack_count, get_arch, plan_kept
from interlace.typecheck import expect


@dataclass(frozen=True)
class SurgeryResult:
    """What ``remove_layers`` did.

    Attributes:
        removed: removed layer indices, in the numbering the model had before the call.
        kept: the model's current layers by their *original* index (composes over repeated cuts;
            also saved as ``interlace_kept_layers`` in the text config).
        num_layers_before: decoder depth before the call.
        num_layers_after: decoder depth after the call.
        config_changes: text/vision config fields that were rewritten, with their new values.
        deepstack_dropped: DeepStack features (by index before the call) that were deleted.
    """

    removed: list[int]
    kept: list[int]
    num_layers_before: int
    num_layers_after: int
    config_changes: dict[str, Any]
    deepstack_dropped: list[int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _deepstack_owner(model: nn.Module) -> nn.Module | None:
    """The vision module holding ``deepstack_merger_list`` (Qwen3-VL), if any."""
    owners = (m for m in model.modules() if isinstance(getattr(m, "deepstack_merger_list", None), nn.ModuleList))
    return next(owners, None)


def remove_layers(model: PreTrainedModel, indices: Sequence[int], *, deepstack: str = "realign") -> SurgeryResult:
    """Delete decoder layers from ``model`` **in place** and fix everything that refers to them.

    Kept layers keep their weights and order. Every integer ``layer_idx`` attribute inside a kept
    layer (the decoder layer, self-, cross- and linear attention) is set to its new position; the
    text config gets the new ``num_hidden_layers``, sliced per-layer lists (``layer_types`` written
    out explicitly), remapped index lists and recomputed pattern integers; module attributes that
    mirror those fields (Mllama's ``cross_attention_layers``) are updated too.

    Args:
        model: a loaded transformers model of a supported family; mutated in place.
        indices: decoder layers to remove, in the model's current numbering.
        deepstack: Qwen3-VL only. ``"realign"`` (default) deletes the DeepStack feature and merger
            of each removed layer < D so the remaining features stay on their original layers;
            ``"protect"`` refuses to remove those layers.

    Returns:
        SurgeryResult describing the cut.

    Raises:
        ValueError: indices out of range, duplicated, removing every layer, or hitting a
            DeepStack layer under ``deepstack="protect"``.
        UnsupportedModelError: the architecture is unknown (see ``interlace.arch``).
        TypeError: model is not a torch module, or indices not a sequence of ints.
    """
    expect(model, nn.Module, "model", "a loaded transformers model")
    if isinstance(indices, str | bytes) or not all(isinstance(i, numbers.Integral) for i in indices):
        raise TypeError(f"indices must be a sequence of decoder layer indices (ints), got {indices!r}")
    arch = get_arch(model)
    kept = plan_kept(model.config, indices, deepstack=deepstack)
    before = len(arch.layers)
    removed = [i for i in range(before) if i not in set(kept)]

    dropped_features = [d for d in range(deepstack_count(model.config)) if d in removed]
    owner = _deepstack_owner(model)
    for d in reversed(dropped_features):
        del owner.deepstack_merger_list[d]  # ModuleList renumbers the rest: merger k+1 becomes k

    for i in reversed(removed):
        del arch.layers[i]
    renumber_layers(arch.layers)

    changes = cut_config(model.config, kept)
    for name, value in changes.items():
        # Some decoders copy config lists at init (Mllama: self.cross_attention_layers).
        mirrored = name != "num_hidden_layers" and hasattr(arch.decoder, name)
        if mirrored and not isinstance(getattr(arch.decoder, name), nn.Module):
            setattr(arch.decoder, name, value)
    if owner is not None and "deepstack_visual_indexes" in changes:
        owner.deepstack_visual_indexes = changes["deepstack_visual_indexes"]

    return SurgeryResult(
        removed=removed,
        kept=list(getattr(arch.text_config, KEPT_FIELD)),
        num_layers_before=before,
        num_layers_after=len(arch.layers),
        config_changes=changes,
        deepstack_dropped=dropped_features,
    )


def renumber_layers(layers: Sequence[nn.Module]) -> None:
    """Set every integer ``layer_idx`` inside each layer (decoder layer, self-, cross- and linear
    attention) to the layer's position: the KV cache indexes by it, after a cut or a growth."""
    for position, layer in enumerate(layers):
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = position


def _identity_pre_hook(store: dict[int, torch.Tensor]):
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        store[id(module)] = args[0] if args else kwargs["hidden_states"]

    return hook


def _identity_hook(store: dict[int, torch.Tensor]):
    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        hidden = store.pop(id(module))
        if isinstance(output, tuple):  # older decoder layers return (hidden_states, ...)
            return (hidden, *output[1:])
        return hidden

    return hook


@contextmanager
def identity_hooks(model: PreTrainedModel, indices: Sequence[int], *, deepstack: str = "realign") -> Iterator[None]:
    """Within the block, the given decoder layers of ``model`` pass their input through unchanged.

    The model is not modified: hooks are added on entry and removed on exit. The layers still run
    (their KV cache slots fill as usual), but their output is replaced by their input, so the
    model computes what ``remove_layers(model, indices)`` would compute.

    Args:
        model: a loaded model of a supported family.
        indices: decoder layers to make identity, in the model's current numbering.
        deepstack: same policy as ``remove_layers``; with ``"realign"`` the DeepStack features of
            identity layers < D are silenced (their merger outputs zeros) to match the pruned model.

    Yields:
        None.

    Raises:
        ValueError: same validation as ``remove_layers``.
    """
    arch = get_arch(model)
    kept = set(plan_kept(model.config, indices, deepstack=deepstack))
    identity = [i for i in range(len(arch.layers)) if i not in kept]
    store: dict[int, torch.Tensor] = {}
    handles = []
    try:
        for i in identity:
            layer = arch.layers[i]
            handles.append(layer.register_forward_pre_hook(_identity_pre_hook(store), with_kwargs=True))
            handles.append(layer.register_forward_hook(_identity_hook(store), with_kwargs=True))
        owner = _deepstack_owner(model)
        for d in range(deepstack_count(model.config)):
            if d in identity:  # the pruned model loses this feature with its layer (see module docstring)
                merger = owner.deepstack_merger_list[d]
                handles.append(merger.register_forward_hook(lambda module, args, out: torch.zeros_like(out)))
        yield
    finally:
        for handle in handles:
            handle.remove()
