"""The INTERLACE pipeline end to end on the embedded model, through the Python API and the CLI."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from interlace.evaluation.verify import verify
from interlace.export import model_card
from interlace.heal.loop import HealConfig
from interlace.pipeline import PruneConfig, prune


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "pruned"
    heal = HealConfig(lr=1e-3, batch_size=16, micro_batch_size=16)
    config = PruneConfig(out=out, ratio=0.25, method="interlace", calib_samples=48, train_samples=64, heal=heal, eval_samples_per_task=20)
    return out, prune(config, log=lambda *_: None)


def test_output_is_a_plain_transformers_checkpoint_with_l_minus_k_layers(pruned):
    out, report = pruned
    model = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32)
    AutoProcessor.from_pretrained(out)
    assert report.layers_before == 12 and report.layers_after == 9
    assert len(model.model.language_model.layers) == 9 == model.config.text_config.num_hidden_layers
    kept = model.config.text_config.interlace_kept_layers
    assert kept == [i for i in range(12) if i not in report.plan["dropped"]]
    assert verify(out).to_dict()


def test_plan_follows_the_interlace_rules(pruned):
    _, report = pruned
    plan = report.plan
    assert len(plan["dropped"]) == 3 and plan["path"] in ("triplets", "triplets+pairs")
    for group in plan["groups"]:
        pair = {group["drop"], group["finetune"]}
        assert pair == {group["start"], group["start"] + 1}
        if group["kind"] == "triplet":
            assert group["anchor"] == group["start"] + 2


def test_manifest_plots_and_card(pruned):
    out, report = pruned
    manifest = json.loads((out / "interlace_manifest.json").read_text())
    assert {"config", "report", "scores", "surgery", "versions", "data"} <= set(manifest)
    assert manifest["report"]["heal"]["steps"] == 4 and len(manifest["report"]["heal"]["losses"]) == 4
    assert set(manifest["report"]["wall_seconds"]) >= {"load", "analyze", "select", "cut", "heal", "save + verify"}
    assert manifest["data"]["train"]["kept"] == 64
    for png in ("scores.png", "plan.png", "heal_loss.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    card = (out / "README.md").read_text()
    assert str(report.plan["dropped"]) in card and "AutoModelForImageTextToText" in card and "interlace" in card
    assert f"{report.retention:.3f}" in card
    assert card == model_card(manifest)
    assert not (out.parent / "pruned.work").exists() and not (out.parent / "pruned.tmp").exists()


def test_retention_is_pruned_over_dense(pruned):
    _, report = pruned
    assert report.retention == round(report.pruned["overall"] / report.dense["overall"], 4)


@pytest.mark.slow
def test_demo_cli_writes_the_promised_json(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "interlace", "demo", "--json", str(tmp_path / "demo.json"), "--out", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads((tmp_path / "demo.json").read_text())
    assert {"dense", "pruned", "retention", "layers_before", "layers_after", "plan"} <= set(data)
    assert data["layers_before"] == 12 and data["layers_after"] == 9
    assert data["retention"] == pytest.approx(data["pruned"]["overall"] / data["dense"]["overall"], abs=1e-4)
    assert "retention" in result.stdout
