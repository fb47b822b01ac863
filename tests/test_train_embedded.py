"""The embedded model's trainer runs end to end on a toy budget and writes a loadable checkpoint."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from interlace.data import vqa
from interlace.data.chat import prompt_text
from interlace.embedded import MODEL_DIR

SCRIPT = Path(__file__).parents[1] / "scripts" / "train_embedded.py"
sys.path.insert(0, str(SCRIPT.parent))
import embedded_tasks  # noqa: E402  (the training-only questions, beside the trainer)

TOY = ["--samples", "600", "--vision-steps", "2", "--vlm-steps", "3", "--batch", "8", "--threads", "1",
       "--eval-every", "0", "--device", "cpu"]


def train(tmp_path, *extra):
    out = tmp_path / "model"
    args = ["--out", str(out), "--cache", str(tmp_path / "cache"), *TOY, *extra]
    run = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return out, json.loads((out / "training_info.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("options", [[], ["--primers", "--primer-steps", "2", "--question-first", "--decoder", "llama", "--vision-from", str(MODEL_DIR)]])
def test_toy_run_writes_a_plain_fp16_checkpoint(tmp_path, options):
    out, info = train(tmp_path, *options)
    model = AutoModelForImageTextToText.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    assert {p.dtype for p in model.parameters()} == {torch.float16}
    assert len(list((tmp_path / "cache").glob("pool_*.pt"))) == 1
    prompt = prompt_text(processor, vqa.load_split("test", 1)[0])
    if not options:
        assert info["decoder"] == "qwen3" and info["training_tasks"] == list(vqa.TASKS)
        assert prompt.index("<image>") < prompt.index("how")
        return
    assert model.config.text_config.model_type == "llama" and info["primer_steps"] == 2
    assert info["training_tasks"][len(vqa.TASKS):] == list(embedded_tasks.PRIMER_TASKS)
    assert prompt.index("<image>") > prompt.index("how")  # question first
    shipped = AutoModelForImageTextToText.from_pretrained(MODEL_DIR)
    for name, tensor in shipped.model.vision_tower.state_dict().items():  # copied, then frozen
        assert torch.equal(tensor, model.model.vision_tower.state_dict()[name]), name


@pytest.mark.slow
def test_continuing_with_primers_and_a_sparse_curriculum(tmp_path):
    """--init-from the shipped model: embeddings grow for the primer words; the curriculum builds its
    own thinned pool; --checkpoints snapshots every evaluation."""
    out, info = train(tmp_path, "--init-from", str(MODEL_DIR), "--primers", "--curriculum", "0.2:2",
                      "--checkpoints", "--eval-every", "2", "--grow-layers", "2")
    pools = sorted(p.name for p in (tmp_path / "cache").glob("pool_*.pt"))
    # the thinned stage holds 2 steps x batch 8 questions
    assert len(pools) == 2 and pools[0].endswith("_n16_thin0.2.pt") and pools[1].endswith("_n600.pt"), pools
    assert info["curriculum"] == [[0.2, 2]] and info["step"] == 3
    # primers are probed too, but "overall" stays the suite's own tasks
    accuracy = info["teacher_forced_accuracy"]
    assert set(accuracy) == {*vqa.TASKS, *embedded_tasks.PRIMER_TASKS, "overall"}
    assert accuracy["overall"] == pytest.approx(sum(accuracy[t] for t in vqa.TASKS) / len(vqa.TASKS))
    snapshot = json.loads((out / "step2" / "training_info.json").read_text())
    assert snapshot["step"] == 2
    model = AutoModelForImageTextToText.from_pretrained(out / "step2")
    assert model.config.text_config.vocab_size == len(AutoProcessor.from_pretrained(out).tokenizer) > 69
    shipped_layers = AutoModelForImageTextToText.from_pretrained(MODEL_DIR).config.text_config.num_hidden_layers
    text = model.config.text_config
    assert info["grow_layers"] == 2 and text.num_hidden_layers == len(text.layer_types) == shipped_layers + 2


def test_cot_drop_shortens_only_the_chain_of_thought_answers():
    sys.path.insert(0, str(SCRIPT.parent))
    import train_embedded

    processor = AutoProcessor.from_pretrained(MODEL_DIR)
    pad = processor.tokenizer.pad_token_id
    pool = train_embedded.test_pool(processor, 3, seed=0, primers=True)
    full = pool["input_ids"].clone()
    train_embedded.drop_cot_words(pool, pool["names"], 3, pad)
    batch = train_embedded.lm_batch(pool, torch.arange(len(full)), pad)
    for row, task in enumerate(pool["tasks"].tolist()):
        name = pool["names"][task]
        answer = processor.tokenizer.decode(batch["labels"][row][batch["labels"][row] != -100]).split()
        before = processor.tokenizer.decode(full[row][full[row] != pad]).split()
        if name in embedded_tasks.COT_STEPS:  # relation_cot loses 3 of its 4 words, line_cot both of its 2, line_total_cot all 3
            words = before[before.index("assistant") + 1 :]
            assert answer == words[min(3, embedded_tasks.COT_STEPS[name]) :], (name, answer, words)
        else:
            assert torch.equal(pool["input_ids"][row], full[row]), name


def test_grown_layers_start_as_the_identity():
    sys.path.insert(0, str(SCRIPT.parent))
    import train_embedded

    model = AutoModelForImageTextToText.from_pretrained(MODEL_DIR, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(MODEL_DIR)
    samples = vqa.load_split("test", 2)
    raw, ids, lens = train_embedded.encode(processor, samples)
    pool = {"images": torch.from_numpy(raw), "input_ids": ids, "prompt_lens": torch.tensor(lens)}
    batch = train_embedded.lm_batch(pool, torch.arange(len(samples)), processor.tokenizer.pad_token_id)
    with torch.no_grad():
        before = model(**batch).logits
        train_embedded.grow_decoder(model, 3)
        after = model(**batch).logits
    layers = model.model.language_model.layers
    assert len(layers) == model.config.text_config.num_hidden_layers == 15
    assert [layer.self_attn.layer_idx for layer in layers] == list(range(15))
    assert torch.equal(before, after)
    assert layers[-1].mlp.up_proj.weight.abs().sum() > 0  # copies, not blank layers: only the outputs are zero


@pytest.mark.slow
@pytest.mark.parametrize("option, message", [(["--curriculum", "1.5:2"], "0 < THIN < 1"),
                                             (["--curriculum", "0.2:9"], "more than --vlm-steps"),
                                             (["--grow-layers", "2"], "needs --init-from")])
def test_bad_options_are_a_usage_error(tmp_path, option, message):
    run = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "m"), *TOY, *option],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and message in run.stderr, run.stderr[-500:]
    assert not (tmp_path / "m").exists()
