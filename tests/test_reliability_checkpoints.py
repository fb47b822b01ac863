"""Checkpoints are whole and finite.

- A damaged or inconsistent model (a deleted tensor, a config claiming more layers than stored,
  an empty ``.bin``, shapes that disagree with the config, a non-integer ``num_hidden_layers``, a
  corrupt ``tokenizer.json``, a tokenizer larger than the embedding, an unsupported architecture)
  fails in one ``error:`` line naming the file and the fix, before any weights load, in every
  command; the Python API raises ``DamagedModelError`` at load time too (transformers would fill
  missing tensors with random values and only log it).
- ``verify`` checks what it claims: non-finite logits fail (a NaN difference compares False with
  ``> atol``), a missing directory is named as such.
- bf16 mixed-precision healing (the default on GPUs) hands back the plain model: the checkpoint
  reloads bit-identical to the in-memory model, for full and LoRA healing.
- Healing refuses to train on zero answer tokens instead of logging a NaN loss.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from interlace import zoo
from interlace.config import HealConfig, PruneConfig
from interlace.data import vqa
from interlace.embedded import MODEL_DIR
from interlace.evaluation.verify import VerificationError, verify
from interlace.heal.loop import NoAnswerTokensError, heal
from interlace.loading import DamagedModelError, ModelNotFoundError, check_model, load_model
from interlace.surgery import remove_layers
from test_cli_errors import assert_clean_failure, run

LAYER_KEY = "language_model.model.layers.3.mlp.up_proj.weight"  # the embedded model's stored layout


def _edit_text_config(path: Path, **fields) -> None:
    config = json.loads((path / "config.json").read_text())
    config["text_config"].update(fields)
    (path / "config.json").write_text(json.dumps(config))


def _edit_weights(path: Path, edit) -> None:
    weights = load_file(path / "model.safetensors")
    edit(weights)
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})


def _deleted_tensor(path: Path) -> None:
    _edit_weights(path, lambda weights: weights.pop(LAYER_KEY))


def _extra_tensor(path: Path) -> None:
    _edit_weights(path, lambda weights: weights.update({LAYER_KEY.replace(".3.", ".12."): weights[LAYER_KEY].clone()}))


def _more_layers(path: Path) -> None:
    _edit_text_config(path, num_hidden_layers=14, layer_types=["full_attention"] * 14)


def _empty_bin(path: Path) -> None:
    (path / "model.safetensors").unlink()
    (path / "pytorch_model.bin").write_bytes(b"")


def _shapes(path: Path) -> None:
    _edit_text_config(path, intermediate_size=256)  # the stored MLPs are 384 wide


def _non_integer_depth(path: Path) -> None:
    _edit_text_config(path, num_hidden_layers=12.5)


def _corrupt_tokenizer(path: Path) -> None:
    text = (path / "tokenizer.json").read_text()
    (path / "tokenizer.json").write_text(text[:53] + "}")


def _vocabulary(path: Path) -> None:
    tokenizer = json.loads((path / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    for i in range(10):  # ids 72..81; the embedding has 72 rows
        vocab[f"extra{i}"] = max(vocab.values()) + 1
    (path / "tokenizer.json").write_text(json.dumps(tokenizer))


def _nan_weights(path: Path) -> None:
    _edit_weights(path, lambda weights: weights[LAYER_KEY].fill_(float("nan")))


# damage -> (how to make it, what the error line must name)
DAMAGES = {
    "deleted-tensor": (_deleted_tensor, ("lack 1 tensor", "layers.3.mlp.up_proj", "re-download")),
    "extra-tensor": (_extra_tensor, ("no place for", "layers.12.mlp.up_proj", "re-download")),
    "more-layers": (_more_layers, ("lack 22 tensor", "layers.12.", "more layers than are stored")),
    "empty-bin": (_empty_bin, ("pytorch_model.bin", "not a PyTorch weights file", "re-download")),
    "shapes": (_shapes, ("model.safetensors", "[128, 384]", "[128, 256]", "restore the config.json")),
    "non-integer-depth": (_non_integer_depth, ("config.json", "num_hidden_layers", "12.5", "correct")),
    "corrupt-tokenizer": (_corrupt_tokenizer, ("tokenizer.json", "not valid JSON", "re-download")),
    "vocabulary": (_vocabulary, ("token ids up to 81", "72 rows", "tokenizer saved with these weights")),
}


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """name -> a copy of the embedded model with that damage."""
    root = tmp_path_factory.mktemp("damaged")
    paths = {}
    for name, (damage, _) in {**DAMAGES, "nan-weights": (_nan_weights, ())}.items():
        paths[name] = root / name
        shutil.copytree(MODEL_DIR, paths[name])
        damage(paths[name])
    return paths


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A causal LM transformers knows but interlace cannot prune (no ``layers`` list)."""
    path = tmp_path_factory.mktemp("gpt2") / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=4, n_embd=32, n_head=2, vocab_size=100, bos_token_id=0, eos_token_id=0)).save_pretrained(path)
    return path


def tiny_llama(path: Path, tied: bool) -> Path:
    """A 3-layer Llama with the embedded model's tokenizer (72 ids; 128 embedding rows)."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
        tie_word_embeddings=tied,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(MODEL_DIR / name, path / name)
    return path


# --- every command: one line, before any weights load ---------------------------------------


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_prune_refuses_a_damaged_model_before_loading(damaged, damage, tmp_path):
    out = tmp_path / "out"
    result = run("prune", str(damaged[damage]), "--no-heal", "--no-eval", "--out", str(out))
    assert_clean_failure(result, str(damaged[damage]), *DAMAGES[damage][1])
    assert not out.exists() and not Path(f"{out}.work").exists()


COMMANDS = {
    "eval": lambda model, tmp: ["eval", model, "--n-per-task", "1"],
    "compare": lambda model, tmp: ["compare", model, "--methods", "shortgpt", "--no-bench", "--out", str(tmp / "out")],
    "sweep": lambda model, tmp: ["sweep", model, "--ratios", "0.25", "--no-bench", "--out", str(tmp / "out")],
    "bench": lambda model, tmp: ["bench", model, "--fast"],
    "cut": lambda model, tmp: ["cut", model, str(tmp / "out"), "--drop", "3"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("damage", ["more-layers", "corrupt-tokenizer", "non-integer-depth"])
def test_every_command_refuses_a_damaged_model(damaged, damage, command, tmp_path):
    result = run(*COMMANDS[command](str(damaged[damage]), tmp_path))
    assert_clean_failure(result, *DAMAGES[damage][1])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["compare", "sweep", "bench", "prune"])
def test_an_unsupported_architecture_is_refused_in_every_pruning_command(gpt2_dir, command, tmp_path):
    args = ["prune", str(gpt2_dir), "--out", str(tmp_path / "out")] if command == "prune" else COMMANDS[command](str(gpt2_dir), tmp_path)
    assert_clean_failure(run(*args), "'gpt2' is not supported", "llama")
    assert not (tmp_path / "out").exists()


def test_eval_still_runs_a_causal_lm_interlace_cannot_prune(gpt2_dir):
    """eval needs no decoder layers: the architecture check is for the commands that cut."""
    check_model(str(gpt2_dir), prunable=False)
    with pytest.raises(ModelNotFoundError, match="'gpt2' is not supported"):
        check_model(str(gpt2_dir))


# --- the Python API ------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["deleted-tensor", "extra-tensor", "more-layers", "shapes"])
def test_load_model_refuses_weights_that_do_not_match_the_config(damaged, damage):
    """load_model does not rely on check_model having run: transformers' loading info is checked.
    The embedded model is stored in Llava's older key layout, which transformers renames on load."""
    needle = {"deleted-tensor": "are missing", "extra-tensor": "have no place", "more-layers": "are missing", "shapes": "stored as"}[damage]
    with pytest.raises(DamagedModelError, match=needle):
        load_model(str(damaged[damage]), device="cpu")


@pytest.mark.parametrize("damage", ["empty-bin", "corrupt-tokenizer", "non-integer-depth"])
def test_load_model_names_the_damaged_file(damaged, damage):
    with pytest.raises(DamagedModelError) as caught:
        load_model(str(damaged[damage]), device="cpu")
    assert str(damaged[damage]) in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("tied", [True, False])
def test_tied_and_untied_heads_load_and_a_deleted_tensor_does_not(tmp_path, tied):
    """A tied lm_head is absent from the file by design (SmolLM2 ties it) and must not be flagged."""
    path = tiny_llama(tmp_path / "llama", tied)
    assert check_model(str(path)) == (3, False)
    model, _ = load_model(str(path), device="cpu")
    if tied:
        assert model.lm_head.weight is model.model.embed_tokens.weight
    weights = load_file(path / "model.safetensors")
    assert ("lm_head.weight" in weights) == (not tied)
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(DamagedModelError, match=r"lack 1 tensor.*model\.layers\.1\.mlp\.up_proj\.weight"):
        check_model(str(path))
    with pytest.raises(DamagedModelError, match=r"1 tensor\(s\) the config needs are missing"):
        load_model(str(path), device="cpu")


def test_smollm2_passes_the_checks():
    """The real model (tied head, Llama layout, GGUF-converted tokenizer) is not refused."""
    try:
        source = zoo.materialize("smollm2")
    except zoo.RealModelUnavailable as error:
        pytest.fail(f"{error} (`make test` installs it)")
    assert check_model(str(source)) == (30, False)


def test_verify_fails_on_non_finite_logits(damaged):
    """NaN weights once gave "saved and verified": max_diff > atol is False for NaN."""
    with pytest.raises(VerificationError, match="NaN or inf"):
        verify(damaged["nan-weights"])
    model, _ = load_model(str(damaged["nan-weights"]), device="cpu")
    with pytest.raises(VerificationError, match="NaN or inf"):
        verify(damaged["nan-weights"], model)


def test_verify_names_a_missing_directory(tmp_path):
    with pytest.raises(VerificationError, match="does not exist"):
        verify(tmp_path / "nonexistent")
    with pytest.raises(VerificationError, match="has no config.json"):
        verify(tmp_path)


def test_prune_with_nan_weights_is_not_saved(damaged, tmp_path):
    out = tmp_path / "out"
    result = run("prune", str(damaged["nan-weights"]), "--no-heal", "--no-eval", "--calib-samples", "4", "--out", str(out))
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "NaN or inf" in errors[0] and "from layer 3 on" in errors[0], output  # LAYER_KEY's layer
    assert not out.exists() and "saved and verified" not in output


# --- healing: zero answer tokens -----------------------------------------------------------


def test_heal_refuses_no_samples():
    model, processor = load_model(None, device="cpu")
    with pytest.raises(ValueError, match="no samples"):
        heal(model, processor, [], [0], HealConfig(batch_size=4, micro_batch_size=4), progress=False)


def test_heal_refuses_a_step_without_answer_tokens():
    """max_length 1 drops every sample: the loss was 0/0 = NaN and the run ended "healed"."""
    model, processor = load_model(None, device="cpu")
    config = HealConfig(batch_size=4, micro_batch_size=4, max_length=1)
    with pytest.raises(NoAnswerTokensError, match=r"max_length=1.*--max-length"):
        heal(model, processor, vqa.load_split("calib", 1)[:4], [0], config, progress=False)


def test_prune_with_max_length_1_fails_cleanly(tmp_path):
    out = tmp_path / "out"
    result = run("prune", "--max-length", "1", "--calib-samples", "8", "--train-samples", "8", "--no-eval", "--out", str(out))
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "no answer token" in errors[0] and "--max-length" in errors[0], output
    assert not out.exists()


# --- mixed precision: the healed model is the plain model again ----------------------------


@pytest.fixture
def fresh_accelerator_state():
    """accelerate keeps one process-wide AcceleratorState: an Accelerator with another mixed
    precision than an earlier one in the same process (a fp32 heal in another test) is refused."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_bf16_healing_returns_the_plain_model_and_verifies_bit_exact(tmp_path, method, fresh_accelerator_state):
    """accelerate's prepare() wraps the forward in bf16 autocast; the checkpoint is fp32. Without
    unwrapping, the reloaded logits differed from the in-memory model's by ~0.2."""
    model, processor = load_model(None, device="cpu")
    remove_layers(model, [3, 7, 9])
    config = HealConfig(lr=1e-3, batch_size=4, micro_batch_size=4, mixed_precision="bf16", method=method)
    result = heal(model, processor, vqa.load_split("calib", 2)[:8], [2, 5], config, progress=False)
    assert len(result.losses) == 2 and all(loss == loss for loss in result.losses)
    assert "forward" not in model.__dict__ and "_original_forward" not in model.__dict__
    ids = torch.tensor([[1, 20, 21, 22]])
    assert len(model(input_ids=ids, output_hidden_states=True).hidden_states) == 10  # transformers' decorators intact
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    report = verify(tmp_path, model)  # atol 0: bitwise-equal logits
    assert report.max_abs_logit_diff == 0.0


def test_bf16_prune_of_the_embedded_model_saves_and_verifies(tmp_path):
    out = tmp_path / "out"
    result = run(
        "prune", "--mixed-precision", "bf16", "--calib-samples", "16", "--train-samples", "64", "--no-eval", "--out", str(out)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "saved and verified:" in result.stdout and out.is_dir()
    manifest = json.loads((out / "interlace_manifest.json").read_text())
    assert manifest["verification"]["max_abs_logit_diff"] == 0.0
    assert verify(out).num_layers == 9


@pytest.mark.slow
def test_bf16_prune_of_smollm2_saves_and_verifies(tmp_path, fresh_accelerator_state):
    from interlace.pipeline import prune

    try:
        zoo.materialize("smollm2")
    except zoo.RealModelUnavailable as error:
        pytest.fail(f"{error} (`make test` installs it)")
    heal_config = HealConfig(lr=1e-4, batch_size=4, micro_batch_size=4, mixed_precision="bf16")
    config = PruneConfig(
        model="smollm2", data="pydocs", ratio=0.1, method="shortgpt", calib_samples=4, train_samples=8, heal=heal_config,
        evaluate=False, out=tmp_path / "out",
    )  # fmt: skip
    report = prune(config, log=lambda message: None)
    manifest = json.loads((tmp_path / "out" / "interlace_manifest.json").read_text())
    assert report.layers_after == 27 and manifest["verification"]["max_abs_logit_diff"] == 0.0
    assert verify(tmp_path / "out").model_class == "LlamaForCausalLM"


def test_eval_of_a_text_model_whose_tokenizer_leaves_nothing_to_score(tmp_path):
    """A causal LM without a tokenizer of its own turns every held-out passage into fewer than two
    tokens; eval used to end in a ValueError traceback (found by scripts/adversarial.py)."""
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=64, bos_token_id=0, eos_token_id=1)
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    result = run("eval", str(tmp_path / "gpt2"))
    output = result.stdout + result.stderr
    # The model loads before the data is scored, so transformers' loading bar may precede the line.
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and "Traceback" not in output and len(errors) == 1, output
    assert "nothing to score" in errors[0] and "check its tokenizer" in errors[0]
