"""Interruption and resume of healing, and numerical faults.

A real `interlace prune` subprocess is stopped with SIGTERM mid-heal, resumed with --resume, and
must end with exactly the weights of an uninterrupted run (CPU, fixed seed).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from interlace.data import vqa
from interlace.heal.loop import HealConfig, NonFiniteLossError, heal, load_checkpoint
from interlace.loading import load_model

ARGS = ["--method", "interlace",  # one heal: the checkpoints and steps below are its own
        "--no-eval", "--train-samples", "384", "--calib-samples", "24", "--batch-size", "16", "--micro-batch-size", "8", "--save-every", "2", "--threads", "1"]


def prune_process(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "interlace", "prune", "--out", str(out), *ARGS, *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


@pytest.mark.slow
def test_sigterm_then_resume_gives_the_uninterrupted_weights(tmp_path):
    reference = prune_process(tmp_path / "a")
    interrupted = prune_process(tmp_path / "b")
    checkpoint = tmp_path / "b.work" / "heal" / "latest" / "meta.json"
    deadline = time.time() + 240
    while not checkpoint.exists() and interrupted.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert checkpoint.exists(), interrupted.communicate()[0]
    interrupted.send_signal(signal.SIGTERM)
    output = interrupted.communicate(timeout=120)[0]
    assert interrupted.returncode == 130, output
    assert "--resume" in output and "Traceback" not in output
    assert not (tmp_path / "b").exists()  # nothing that looks complete
    state = load_checkpoint(tmp_path / "b.work" / "heal")
    assert 0 < state["step"] < 24

    resumed = prune_process(tmp_path / "b", "--resume")
    resumed_output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, resumed_output
    assert "the plan of the interrupted run" in resumed_output  # the selection is not repeated
    assert reference.wait(timeout=300) == 0, reference.communicate()[0]
    a = load_file(tmp_path / "a" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    assert not (tmp_path / "b.work").exists()
    # repeatability: same seed and inputs give the same scores, plan and healing curve
    manifests = [json.loads((tmp_path / run / "interlace_manifest.json").read_text()) for run in "ab"]
    assert manifests[0]["scores"] == manifests[1]["scores"]
    assert manifests[0]["report"]["plan"] == manifests[1]["report"]["plan"]
    assert manifests[0]["report"]["heal"]["losses"] == manifests[1]["report"]["heal"]["losses"]
    assert manifests[1]["report"]["heal"]["resumed_from_step"] > 0
    assert manifests[0]["versions"]["torch"] == torch.__version__ and manifests[0]["config"]["seed"] == 0


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path):
    model, processor = load_model(None)
    samples = vqa.load_split("calib", 8)[:40]
    calls = {"n": 0}

    def poison(module, args, output):
        calls["n"] += 1
        if calls["n"] > 3:  # forward passes 1-3 are fine; the 4th (step 4) turns NaN
            return output * float("nan")

    handle = model.model.language_model.layers[5].register_forward_hook(poison)
    config = HealConfig(lr=1e-3, batch_size=8, micro_batch_size=8, save_every=1)
    with pytest.raises(NonFiniteLossError, match=r"step 4/5") as error:
        heal(model, processor, samples, [4, 5], config, checkpoint_dir=tmp_path / "heal", progress=False)
    handle.remove()
    assert "intact" in str(error.value)
    state = load_checkpoint(tmp_path / "heal")
    assert state["step"] == 3
    assert all(torch.isfinite(v).all() for v in state["trainable"].values())
    assert not (tmp_path / "heal" / "latest.tmp").exists()


def test_a_kill_while_run_state_is_written_leaves_the_previous_file(tmp_path, monkeypatch):
    """scores.json, plan.json, dense_eval.json and SLEB's state go through write_atomic: a kill
    between writing and renaming leaves the last complete file for --resume, never a torn one."""
    from interlace import files

    target = tmp_path / "scores.json"
    files.write_atomic(target, '{"step": 1}')

    def killed(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        files.write_atomic(target, '{"step": 2, "half')
    assert json.loads(target.read_text()) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]  # nor a temporary file


def test_two_processes_writing_one_file_never_share_its_temporary(tmp_path):
    """A study's processes each rewrite table.md after a row: one's temporary file is not the other's."""
    from interlace import files

    target = tmp_path / "table.md"
    other = tmp_path / f"table.md.{os.getpid() + 1}.tmp"  # another process, mid-write
    other.write_text("half of the other's table")
    files.write_atomic(target, "mine")
    assert target.read_text() == "mine" and other.read_text() == "half of the other's table"
