"""Healing under `accelerate launch --num_processes 2` (gloo on CPU) follows the one-process run:
same global batch, same loss curve and weights within float tolerance."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parent / "scripts" / "heal_run.py"
LAUNCH = [
    sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
    "--mixed_precision", "no", "--dynamo_backend", "no",
]


@pytest.mark.slow
def test_two_process_heal_matches_one_process(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "one.json"), "8"], capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    launch = LAUNCH
    two = subprocess.run([*launch, str(SCRIPT), str(tmp_path / "two.json"), "4"], capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert len(a["losses"]) == len(b["losses"]) == 3
    # HealResult rounds each loss to 6 decimals, so a loss near 0.04 can differ by one 1e-6 step
    assert a["losses"] == pytest.approx(b["losses"], rel=1e-5, abs=2e-6)
    # Weights: the two runs differ by float noise (gloo's all-reduce sums in another order), which
    # must be tiny next to what healing moved; a wrong gradient average or a skipped step is not.
    wa, wb = (torch.load(tmp_path / f"{n}.json.pt") for n in ("one", "two"))
    assert torch.equal(wa["before"], wb["before"])
    moved = (wa["after"] - wa["before"]).norm()
    assert moved > 0
    assert (wa["after"] - wb["after"]).norm() <= 1e-3 * moved


@pytest.mark.slow
def test_prune_under_accelerate_launch_writes_one_verified_checkpoint(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launch = LAUNCH
    args = [
        "-m", "interlace", "prune", "--method", "interlace", "--no-eval", "--train-samples", "64", "--calib-samples", "24", "--batch-size", "16",
        "--micro-batch-size", "4", "--out", str(tmp_path / "out"), "--threads", "1",
    ]
    result = subprocess.run([*launch, *args], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.count("saved and verified") == 1
    manifest = json.loads((tmp_path / "out" / "interlace_manifest.json").read_text())
    assert manifest["report"]["heal"]["steps"] == 4 and manifest["report"]["layers_after"] == 9
    assert not (tmp_path / "out.work").exists() and not (tmp_path / "out.tmp").exists()


# FSDP. accelerate 1.16 turns on FSDP only for accelerator devices: AcceleratorState picks
# DistributedType.FSDP inside the branch for MULTI_GPU/NPU/XPU/... (accelerate/state.py), and
# `accelerate launch` refuses --cpu with --use_fsdp. torch 2.13's FSDP2 (`fully_shard`) itself runs
# over gloo on CPU, but not through accelerate, so the CPU test is that a CPU launch cannot heal
# unsharded by accident, and the sharded comparison runs on two GPUs.
FSDP = ["--use_fsdp", "--fsdp_version", "2", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
        "--fsdp_state_dict_type", "FULL_STATE_DICT", "--fsdp_reshard_after_forward", "true"]
FSDP_LAUNCH = [
    sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
    "--mixed_precision", "no", "--dynamo_backend", "no", *FSDP,
]


@pytest.mark.slow
def test_fsdp_launch_on_cpu_is_refused_instead_of_healing_twice(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    refused = subprocess.run([*LAUNCH, *FSDP, str(SCRIPT), str(tmp_path / "x.json"), "4"], capture_output=True, text=True, env=env, timeout=300)
    assert refused.returncode != 0 and "--use_fsdp" in refused.stderr  # accelerate: one of --cpu, --use_fsdp
    # Without --cpu accelerate finds no backend for FSDP and leaves each process alone; heal must say
    # so rather than let every process heal all the data and write the same output.
    alone = subprocess.run([*FSDP_LAUNCH, str(SCRIPT), str(tmp_path / "y.json"), "4"], capture_output=True, text=True, env=env, timeout=300)
    assert alone.returncode != 0
    assert "2 processes were launched but accelerate set up none" in alone.stderr
    assert not (tmp_path / "y.json").exists()


@pytest.mark.slow
def test_fsdp2_sharded_model_is_made_whole_for_evaluation_and_saving(tmp_path):
    # What heal does after a sharded run (interlace.heal.gather), on a model torch's fully_shard
    # sharded over gloo as accelerate's FSDP2 does on GPUs; without it the main process alone can
    # neither run nor save the healed model (its parameters are DTensor shards).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    script = Path(__file__).parent / "scripts" / "fsdp2_gather.py"
    out = tmp_path / "gathered.json"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script), str(out)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["sharded_class"] == "FSDPLlamaForCausalLM" and report["class"] == "LlamaForCausalLM"
    assert report["dtensors"] == 0 and report["trainable"] == 0 and report["keys_equal"] and report["tied"]
    assert report["moved"] > 1e-4  # the trained layer changed, and the gathered weights are the one-process ones
    assert report["max_diff"] <= 1e-6 and report["reference_diff"] <= 1e-5
    assert report["reload_diff"] == 0.0 and report["max_new_tokens"] == 7


def test_a_sharded_heal_refuses_what_it_cannot_keep():
    from interlace.heal.loop import HealConfig, _sharded_problem

    assert _sharded_problem(HealConfig(), None) is None
    assert "LoRA" in _sharded_problem(HealConfig(method="lora"), None)
    assert "--save-every 0" in _sharded_problem(HealConfig(save_every=4), None)
    assert "--overwrite" in _sharded_problem(HealConfig(), {"step": 3})


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="FSDP through accelerate needs 2 CUDA devices")
def test_fsdp_two_process_heal_matches_one_process(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "one.json"), "8"], capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([*FSDP_LAUNCH, str(SCRIPT), str(tmp_path / "two.json"), "4"], capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert a["losses"] == pytest.approx(b["losses"], rel=1e-4, abs=2e-6)
    wa, wb = (torch.load(tmp_path / f"{n}.json.pt") for n in ("one", "two"))
    moved = (wa["after"] - wa["before"]).norm()
    assert moved > 0 and (wa["after"] - wb["after"]).norm() <= 1e-3 * moved


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="FSDP through accelerate needs 2 CUDA devices")
def test_prune_under_fsdp_writes_a_checkpoint_from_pretrained_loads(tmp_path):
    from transformers import AutoModelForImageTextToText

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = [
        "-m", "interlace", "prune", "--method", "interlace", "--no-eval", "--train-samples", "64", "--calib-samples", "24", "--batch-size", "16",
        "--micro-batch-size", "4", "--out", str(tmp_path / "out"),
    ]
    result = subprocess.run([*FSDP_LAUNCH, *args], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.count("saved and verified") == 1
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "out")
    assert len(model.model.language_model.layers) == 9
