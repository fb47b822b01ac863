"""Heal a fixed cut of the embedded model and write the loss curve; run by test_distributed.py
both as one process and under `accelerate launch --num_processes 2` (gloo on CPU)."""

import json
import os
import sys

import torch

from interlace.data import vqa
from interlace.heal.loop import HealConfig, heal
from interlace.loading import load_model
from interlace.surgery import remove_layers

torch.set_num_threads(1)
model, processor = load_model(None, device="cpu")
remove_layers(model, [5])
before = model.model.language_model.layers[4].mlp.down_proj.weight.detach().clone()
samples = vqa.load_split("calib", 8)[:48]
config = HealConfig(lr=1e-3, batch_size=16, micro_batch_size=int(sys.argv[2]), seed=0)
result = heal(model, processor, samples, [4], config, progress=False)
weight = model.model.language_model.layers[4].mlp.down_proj.weight.detach()
if hasattr(weight, "full_tensor"):  # an FSDP2 shard (DTensor): gather it, on every rank
    weight = weight.full_tensor()
if int(os.environ.get("RANK", "0")) == 0:
    torch.save({"before": before, "after": weight.clone()}, sys.argv[1] + ".pt")
    with open(sys.argv[1], "w") as handle:
        json.dump({"losses": result.losses}, handle)
