"""Survivors-only healing does no work for the frozen layers."""

import pytest

from interlace.arch import get_arch
from interlace.data import vqa
from interlace.heal.loop import HealConfig, heal, load_checkpoint
from interlace.loading import load_model


@pytest.mark.parametrize("checkpointing", [False, True])
def test_frozen_layers_below_the_survivors_run_without_autograd(tmp_path, checkpointing):
    model, processor = load_model(None)
    layers = get_arch(model).layers
    survivors = [4, 7]
    builds_graph = {}

    def record(index):
        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            builds_graph[index] = builds_graph.get(index, False) or hidden.requires_grad

        return hook

    handles = [layer.register_forward_hook(record(i)) for i, layer in enumerate(layers)]
    config = HealConfig(lr=1e-3, batch_size=8, micro_batch_size=8, save_every=1, gradient_checkpointing=checkpointing)
    heal(model, processor, vqa.load_split("calib", 8)[:16], survivors, config, checkpoint_dir=tmp_path, progress=False)
    for handle in handles:
        handle.remove()

    # No graph below the lowest survivor, even with checkpointing (transformers would otherwise
    # make the embedding output require grad); a graph from there up, for the survivors' gradients.
    assert builds_graph == {i: i >= min(survivors) for i in range(len(layers))}
    survivor_names = {f"{get_arch(model).layers_path}.{i}." for i in survivors}
    state = load_checkpoint(tmp_path)  # saved after step 1 of 2
    assert state["trainable"] and all(any(name.startswith(s) for s in survivor_names) for name in state["trainable"])
    # The optimizer holds the survivors' parameters and nothing else.
    survivor_params = sum(1 for i in survivors for _ in layers[i].parameters())
    assert [len(group["params"]) for group in state["optimizer"]["param_groups"]] == [survivor_params]
    assert all(p.grad is None for p in model.parameters())
    assert not model.training and not any(p.requires_grad for p in model.parameters())
