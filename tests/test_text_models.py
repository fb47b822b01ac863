"""Text-only causal LMs and mixed image / text-only data.

Tiny random Llama and Qwen3 checkpoints carry a word-level tokenizer with the special tokens and
the chat template of a real text model (SmolLM2's, which takes string content, and Qwen2.5's); a
tokenizer-only checkpoint has no chat template at all. VLM tests use the embedded LLaVA with
samples that have images and samples that do not, in the same batch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from interlace.calibration import compute_scores
from interlace.data import chat, vqa
from interlace.evaluation.generate import generate_answers
from interlace.heal.loop import HealConfig, heal
from interlace.loading import load_model

# SmolLM2-135M-Instruct's template, as it ships (string content: `'...' + message['content']`).
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Qwen2.5's shape (without tools): prints content directly, so a list of parts would print as a repr.
QWEN_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}{{ message['content'] }}"
    "{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
WORDS = (
    "what is the capital of france paris germany berlin italy rome a an city country big small river "
    "system you are helpful ai assistant named smollm trained by hugging face user answer question "
    "it was sunny day and dog fox quick brown jumps over lazy"
).split()
SPECIALS = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]

ROWS = [
    {"images": [], "texts": [{"user": "what is the capital of france", "assistant": "paris"}], "source": "geo"},
    {"images": [], "texts": [{"user": "what is the capital of italy", "assistant": "rome"}], "source": "geo"},
    {
        "images": [],
        "texts": [{"user": "what is the capital of germany", "assistant": "berlin"}, {"user": "a big city", "assistant": "it is a big city"}],
        "source": "geo",
    },
    {"images": [], "texts": [{"user": "is paris a city", "assistant": "paris is a big city"}], "source": "geo"},
]


def word_tokenizer(chat_template: str | None) -> PreTrainedTokenizerFast:
    """A word-level tokenizer with ChatML specials; '\\n' is a word so templates round-trip."""
    vocab = {token: index for index, token in enumerate(SPECIALS + ["\n"] + WORDS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="removed")
    core.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<|im_start|>", eos_token="<|im_end|>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "\n"]})
    tokenizer.chat_template = chat_template
    return tokenizer


def tiny_checkpoint(path: Path, family: str, chat_template: str | None) -> Path:
    tokenizer = word_tokenizer(chat_template)
    sizes = dict(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=8, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, bos_token_id=2, eos_token_id=3,
        tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(**sizes))
    else:
        model = Qwen3ForCausalLM(Qwen3Config(**sizes, head_dim=8))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("llama"), "llama", SMOLLM2_TEMPLATE)


def test_content_style_follows_the_template():
    from embedded_build import build_processor

    assert chat.content_style(word_tokenizer(SMOLLM2_TEMPLATE)) == "string"  # parts raise a TypeError
    assert chat.content_style(word_tokenizer(QWEN_TEMPLATE)) == "string"  # parts print as a repr
    assert chat.content_style(word_tokenizer(None)) == "none"
    assert chat.content_style(build_processor()) == "parts"


def test_string_template_labels_only_the_answers():
    tokenizer = word_tokenizer(SMOLLM2_TEMPLATE)
    encoded = chat.encode_for_training(tokenizer, ROWS[2])
    ids, labels = encoded["input_ids"][0], encoded["labels"][0]
    # the rendered text is the template's own, not a rewritten one
    assert tokenizer.decode(ids).startswith("<|im_start|> system")
    answer_ids = ids[labels != chat.IGNORE_INDEX].tolist()
    expected = [tokenizer.convert_tokens_to_ids(w) for w in "berlin <|im_end|> \n it is a big city <|im_end|> \n".split(" ")]
    assert answer_ids == expected
    assert chat.IGNORE_INDEX in labels.tolist() and int(ids[0]) == tokenizer.convert_tokens_to_ids("<|im_start|>")  # no BOS added twice
    assert (ids == tokenizer.convert_tokens_to_ids("<|im_start|>")).sum() == 5  # system, 2 users, 2 assistants


def test_no_template_renders_user_assistant_lines_and_plain_text_is_all_targets():
    tokenizer = word_tokenizer(None)
    assert chat.prompt_text(tokenizer, ROWS[0]) == "User: what is the capital of france\nAssistant:"
    plain = {"images": [], "texts": [], "text": "the quick brown fox jumps over the lazy dog", "source": "t"}
    encoded = chat.encode_for_training(tokenizer, plain)
    assert torch.equal(encoded["labels"], encoded["input_ids"])
    assert chat.prompt_text(tokenizer, plain) == plain["text"]


def test_images_for_a_text_model_are_refused_with_the_fix():
    tokenizer = word_tokenizer(SMOLLM2_TEMPLATE)
    sample = vqa.load_split("calib", 1)[0]
    with pytest.raises(ValueError, match="takes text only"):
        chat.encode_for_training(tokenizer, sample)


@pytest.mark.parametrize("family,template", [("llama", SMOLLM2_TEMPLATE), ("qwen3", QWEN_TEMPLATE), ("llama", None)])
def test_scores_heal_and_generate_on_a_text_model(tmp_path, family, template):
    path = tiny_checkpoint(tmp_path / family, family, template)
    model, tokenizer = load_model(str(path), device="cpu")
    plain = {"images": [], "texts": [], "text": "it was a sunny day and the quick brown fox jumps", "source": "t"}
    samples = ROWS + [plain]
    scores = compute_scores(model, tokenizer, samples, batch_size=3, progress=False)
    assert scores.num_samples == len(samples) and np.isfinite(scores.s(1)).all()
    before = [p.detach().clone() for p in model.model.layers[2].parameters()]
    result = heal(model, tokenizer, samples * 2, [2], HealConfig(lr=1e-2, batch_size=5, micro_batch_size=5), progress=False)
    assert result.steps == 2 and all(np.isfinite(result.losses))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.model.layers[2].parameters()))
    answers = generate_answers(model, tokenizer, ROWS, batch_size=2, max_new_tokens=3)
    assert len(answers) == len(ROWS) and all(isinstance(a, str) for a in answers)


def _vlm_mix():
    with_images = vqa.load_split("calib", 2, ("count", "digit_sum"))
    text_only = [
        {**s, "images": [], "texts": [{"user": s["texts"][0]["user"].split("?")[0] + " ?", "assistant": s["texts"][0]["assistant"]}]}
        for s in vqa.load_split("calib", 2, ("count", "compare"))
    ]
    return with_images, text_only


def test_mixed_vlm_batches_score_as_the_weighted_mean_of_their_parts():
    model, processor = load_model(None)
    with_images, text_only = _vlm_mix()
    mixed = [with_images[0], text_only[0], with_images[1], text_only[1], with_images[2], text_only[2]]
    both = compute_scores(model, processor, mixed, batch_size=6, progress=False)
    a = compute_scores(model, processor, with_images[:3], batch_size=6, progress=False)
    b = compute_scores(model, processor, text_only[:3], batch_size=6, progress=False)
    assert both.num_samples == 6
    for k in (1, 3):
        np.testing.assert_allclose(both.s(k), (a.s(k) + b.s(k)) / 2, rtol=1e-5, atol=1e-6)
    # text-only rows really ran without an image: their scores differ from the image rows'
    assert not np.allclose(a.s(1), b.s(1), atol=1e-4)


def test_mixed_vlm_batches_heal_and_generate_in_order():
    model, processor = load_model(None)
    with_images, text_only = _vlm_mix()
    mixed = [text_only[0], with_images[0], text_only[1], with_images[1]]
    batches = chat.training_batches(processor, mixed, batch_size=4)
    assert sorted("pixel_values" in b for b in batches) == [False, True]
    together = generate_answers(model, processor, mixed, batch_size=4, max_new_tokens=4)
    apart = generate_answers(model, processor, mixed[1::2], batch_size=4, max_new_tokens=4)
    text_apart = generate_answers(model, processor, mixed[0::2], batch_size=4, max_new_tokens=4)
    assert together[1::2] == apart and together[0::2] == text_apart
    result = heal(model, processor, mixed * 2, [3], HealConfig(lr=1e-3, batch_size=4, micro_batch_size=2), progress=False)
    assert result.steps == 2 and all(np.isfinite(result.losses)) and result.skipped_samples == 0


def run_cli(*args):
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "COLUMNS": "100"}
    return subprocess.run([sys.executable, "-m", "interlace", *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_prune_cli_on_a_text_llm_with_a_string_template(llama_dir, tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in ROWS * 5))
    out = tmp_path / "out"
    result = run_cli(
        "prune", str(llama_dir), "--ratio", "0.25", "--data", str(data), "--calib-samples", "4", "--lr", "1e-3",
        "--batch-size", "4", "--micro-batch-size", "2", "--out", str(out), "--threads", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.config.num_hidden_layers == 6
    assert AutoTokenizer.from_pretrained(out).chat_template == SMOLLM2_TEMPLATE  # the user's template, untouched
    manifest = json.loads((out / "interlace_manifest.json").read_text())
    assert manifest["report"]["layers_after"] == 6 and manifest["report"]["heal"]["steps"] == 5


@pytest.mark.slow
def test_prune_cli_on_a_vlm_with_mixed_image_and_text_rows(tmp_path):
    rows = []
    for index, sample in enumerate(vqa.load_split("calib", 3, ("count", "compare"))):
        text = sample["texts"]
        if index % 2:
            sample["images"][0].save(tmp_path / f"img{index}.png")
            rows.append({"images": [f"img{index}.png"], "texts": text, "source": "with_image"})
        else:
            rows.append({"images": [], "texts": [{"user": text[0]["user"].split("?")[0] + " ?", "assistant": text[0]["assistant"]}], "source": "text_only"})
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows * 4))
    out = tmp_path / "out"
    result = run_cli(
        "prune", "--ratio", "0.25", "--data", str(data), "--calib-samples", "6", "--no-eval", "--batch-size", "8",
        "--micro-batch-size", "4", "--out", str(out), "--threads", "1", "--json", str(tmp_path / "report.json"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((out / "interlace_manifest.json").read_text())
    assert manifest["report"]["layers_after"] == 9
    assert manifest["data"]["train"]["skipped"] == {} or sum(manifest["data"]["train"]["skipped"].values()) == 0
    assert manifest["report"]["heal"]["skipped_samples"] == 0 and manifest["report"]["heal"]["samples"] == 24
