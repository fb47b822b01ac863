"""A healed model whose weights training sharded (FSDP2, DeepSpeed ZeRO-3), made whole again.

Under FSDP2 ``accelerator.prepare`` shards the model in place (``fully_shard`` turns every parameter
into a DTensor shard and swaps the module's class for an ``FSDP<Class>``); under ZeRO-3 each process
keeps a partition of every parameter. No process then holds the healed weights, and a forward needs
every process: the main process alone could neither evaluate nor save the model. ``whole_model``
gathers the weights on every process and builds a plain model of the original class from them, so
the rest of ``prune`` (evaluate, save, verify) runs as after a one-process heal.
"""

from __future__ import annotations

import copy
from typing import Any

import torch


def is_sharded(accelerator: Any) -> bool:
    """Whether ``accelerator`` shards the weights: FSDP, or DeepSpeed at ZeRO stage 3."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return accelerator.state.deepspeed_plugin.zero_stage == 3
    return False


def whole_state(model: Any) -> dict[str, torch.Tensor]:
    """Every weight and buffer of the (unwrapped, sharded) ``model``, whole, on the CPU.

    A collective: every process must call it, in the same order. One tensor is gathered at a time,
    so an accelerator holds at most one whole tensor beyond its shard.
    """
    whole = {}
    for name, value in model.state_dict(keep_vars=True).items():
        if hasattr(value, "full_tensor"):  # an FSDP2 shard (torch.distributed.tensor.DTensor)
            whole[name] = value.full_tensor().detach().cpu()  # a fresh gathered tensor: one copy, to the CPU
        elif hasattr(value, "ds_id"):  # a ZeRO-3 partition: whole only inside GatheredParameters
            import deepspeed

            with deepspeed.zero.GatheredParameters([value]):
                whole[name] = value.data.detach().to("cpu", copy=True)
        else:  # a whole tensor the trained model keeps: copied, so the two never share storage
            whole[name] = value.detach().to("cpu", copy=True)
    return whole


def original_class(model: Any) -> type:
    """The transformers class behind FSDP2's ``FSDP<Class>`` (which subclasses ``FSDPModule`` and it)."""
    from torch.distributed.fsdp import FSDPModule

    cls = type(model)
    if issubclass(cls, FSDPModule):
        cls = next(base for base in cls.__mro__[1:] if not issubclass(base, FSDPModule))
    return cls


def whole_model(model: Any, device: Any) -> Any:
    """A plain model of ``model``'s original class holding its gathered weights, on ``device``,
    in eval mode with nothing trainable. Every process calls it and gets its own copy."""
    state = whole_state(model)
    dtype = next(t.dtype for t in state.values() if t.is_floating_point())
    # from_pretrained(None, config=..., state_dict=...) builds the model on the meta device, ties the
    # embeddings and makes the non-persistent buffers (rotary frequencies) as a load from disk would.
    plain = original_class(model).from_pretrained(None, config=model.config, state_dict=state, dtype=dtype)
    plain.generation_config = copy.deepcopy(model.generation_config)  # e.g. a chat model's sampling defaults
    return plain.to(device).eval().requires_grad_(False)
