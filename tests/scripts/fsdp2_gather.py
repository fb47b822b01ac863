"""Shard a tiny Llama with torch's FSDP2 (``fully_shard``) over gloo on CPU, train one of its layers
one step, and make it whole with interlace.heal.gather.whole_model; run by test_distributed.py under
``torch.distributed.run --nproc_per_node 2``. Rank 0 writes what the test checks to argv[1].

accelerate 1.16 sets up FSDP only on accelerator devices, so healing cannot run sharded on CPU; this
runs the step that comes after it, on the same kind of sharded model accelerate's FSDP2 makes."""

import copy
import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers import LlamaConfig, LlamaForCausalLM

from interlace.heal.gather import whole_model

torch.set_num_threads(1)
dist.init_process_group("gloo")
torch.manual_seed(0)
config = LlamaConfig(
    vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
    tie_word_embeddings=True,
)
model = LlamaForCausalLM(config)
model.generation_config.max_new_tokens = 7  # must survive the gathering
reference = copy.deepcopy(model)
before = model.model.layers[1].mlp.up_proj.weight.detach().clone()
ids = torch.randint(0, config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))


def train_one_step(net):
    """SGD on layer 1 only, as healing trains the survivors; the same batch on every rank, so FSDP's
    averaged gradient is the one-process gradient."""
    net.requires_grad_(False)
    net.model.layers[1].requires_grad_(True)
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5)
    net(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()


mesh = init_device_mesh("cpu", (dist.get_world_size(),))
for layer in model.model.layers:
    fully_shard(layer, mesh=mesh)
fully_shard(model, mesh=mesh)
train_one_step(model)
train_one_step(reference)
plain = whole_model(model, "cpu")
if dist.get_rank() == 0:
    expected = reference.state_dict()
    out = sys.argv[1]
    plain.save_pretrained(out + ".ckpt")
    loaded = LlamaForCausalLM.from_pretrained(out + ".ckpt")
    with torch.no_grad():
        logits = plain(input_ids=ids).logits
        report = {
            "sharded_class": type(model).__name__,
            "class": type(plain).__name__,
            "dtensors": sum(hasattr(p, "full_tensor") for p in plain.parameters()),
            "keys_equal": sorted(plain.state_dict()) == sorted(expected),
            "max_diff": max((plain.state_dict()[k] - v).abs().max().item() for k, v in expected.items()),
            "moved": (plain.model.layers[1].mlp.up_proj.weight - before).abs().max().item(),
            "tied": plain.lm_head.weight is plain.model.embed_tokens.weight,
            "max_new_tokens": plain.generation_config.max_new_tokens,
            "trainable": sum(p.requires_grad for p in plain.parameters()),
            "reload_diff": (loaded(input_ids=ids).logits - logits).abs().max().item(),
            "reference_diff": (reference(input_ids=ids).logits - logits).abs().max().item(),
        }
    with open(out, "w") as handle:
        json.dump(report, handle)
dist.destroy_process_group()
