"""Pruned checkpoints serve in vLLM: greedy tokens equal transformers' greedy ``generate``.

Tiny random Llama and Qwen3 checkpoints, dense and with layer 0, a middle layer or the last one
cut; the real SmolLM2-135M-Instruct dense and with 7 of 30 layers cut, on chat prompts; the real
Gemma 3 270M dense and with 4 of 18 layers cut (its sliding/global pattern sliced), on text; the
embedded LLaVA (through vLLM's Transformers backend: the native class needs torchvision, see
``interlace.speed.vllm``). One vLLM worker serves the whole module. Marked ``vllm``; `make test` builds
``.venv-vllm`` first, and without it these tests fail saying to run `make vllm-setup`.

Tiny checkpoints must match to the last token. The real model may differ after the first step where
transformers' top-2 logit gap is < ``NEAR_TIE`` (two kernels may pick either token there, and the
rest of the sequence follows); before it, tokens must be equal.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM
from typer.testing import CliRunner

from interlace.speed.vllm import VllmError, VllmWorker
from interlace.surgery import remove_layers

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
NEAR_TIE = 1e-3
EOS = 2

pytestmark = pytest.mark.vllm

# tiny_models.TEXT, but head_dim 32 (vLLM's CPU attention takes 32, 64, 80, ...; not 16) and a
# wider init so random greedy sequences vary instead of repeating one token.
TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=6, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, max_position_embeddings=256, pad_token_id=0, bos_token_id=1,
            eos_token_id=EOS, tie_word_embeddings=False, initializer_range=0.1)
FAMILIES = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen3": (Qwen3Config, Qwen3ForCausalLM)}
CUTS = {"dense": [], "first": [0], "middle": [3], "last": [5]}
TINY_PROMPTS = [[16, 40, 50, 60, 70], [20, 21, 22], list(range(30, 70)), [99] * 9 + [17]]


@pytest.fixture(scope="module")
def worker():
    if not VLLM_PYTHON.exists():
        pytest.fail(f"{VLLM_PYTHON} is missing: run `make vllm-setup` (`make test` does it first)")
    with VllmWorker(VLLM_PYTHON) as served:
        yield served


def reference(model, prompts: list[dict], max_new_tokens: int) -> list[tuple[list[int], list[float]]]:
    """Transformers' greedy new tokens per prompt (cut after EOS) and the top-2 logit gap of each step."""
    out = []
    with torch.no_grad():
        for inputs in prompts:
            result = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, output_logits=True,
                                    return_dict_in_generate=True)
            tokens = result.sequences[0, inputs["input_ids"].shape[1]:].tolist()
            top2 = torch.stack(result.logits)[:, 0].topk(2, dim=-1).values  # (steps, 2)
            gaps = (top2[:, 0] - top2[:, 1]).tolist()
            eos = model.generation_config.eos_token_id
            eos = set(eos if isinstance(eos, list) else [eos])
            end = next((i + 1 for i, t in enumerate(tokens) if t in eos), len(tokens))
            out.append((tokens[:end], gaps[:end]))
    return out


def assert_same_greedy(got: list[list[int]], expected: list[tuple[list[int], list[float]]]) -> int:
    """Equal tokens, or equal up to transformers' first near-tie; returns how many prompts needed the near-tie rule."""
    near_ties = 0
    for index, (tokens, (want, gaps)) in enumerate(zip(got, expected)):
        if tokens == want:
            continue
        tie = next((i for i, g in enumerate(gaps) if g < NEAR_TIE), None)
        assert tie is not None and tokens[:tie] == want[:tie], (
            f"prompt {index}: vLLM {tokens} != transformers {want} (top-2 gaps {[round(g, 4) for g in gaps]})")
        near_ties += 1
    return near_ties


def tiny_checkpoint(family: str, drop: list[int], path: Path):
    config_class, model_class = FAMILIES[family]
    torch.manual_seed(0)
    model = model_class(config_class(**TINY)).eval()
    if drop:
        remove_layers(model, drop)
    model.save_pretrained(path)
    return model


@pytest.mark.parametrize("cut", list(CUTS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_tiny_checkpoint_greedy_equals_transformers(worker, family, cut, tmp_path):
    model = tiny_checkpoint(family, CUTS[cut], tmp_path / "ckpt")
    assert worker.load(tmp_path / "ckpt")["architecture"] == model.config.architectures[0]
    expected = reference(model, [{"input_ids": torch.tensor([p])} for p in TINY_PROMPTS], 12)
    got = worker.greedy(TINY_PROMPTS, 12)
    assert assert_same_greedy(got, expected) == 0  # every sequence equal to the last token


# ---------------------------------------------------------------------------- the real model

CHATS = ["What is the capital of France?", "Write a haiku about the sea.", "List three prime numbers.",
         "Explain in one sentence what a neural network is."]
SMOLLM2_DROP = [3, 7, 11, 15, 19, 23, 27]


def dense_and_cut(name: str, drop: list[int], prompts_of, new_tokens: int, tmp_path_factory):
    """A zoo model's directory and a copy with ``drop`` removed, its prompts, and transformers'
    greedy tokens for both: what vLLM must reproduce."""
    from interlace.loading import resolve

    dense = Path(resolve(name))
    tokenizer = AutoTokenizer.from_pretrained(dense)
    model = AutoModelForCausalLM.from_pretrained(dense, dtype=torch.float32).eval()
    prompts = prompts_of(tokenizer)
    expected = {"dense": reference(model, [{"input_ids": torch.tensor([p])} for p in prompts], new_tokens)}
    remove_layers(model, drop)
    pruned = tmp_path_factory.mktemp(f"{name}-pruned")
    model.save_pretrained(pruned)
    tokenizer.save_pretrained(pruned)
    expected["pruned"] = reference(model, [{"input_ids": torch.tensor([p])} for p in prompts], new_tokens)
    return {"dense": dense, "pruned": pruned}, prompts, expected


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    def chat_prompts(tokenizer):
        return [tokenizer.apply_chat_template([{"role": "user", "content": c}], add_generation_prompt=True,
                                              tokenize=True, return_dict=True)["input_ids"] for c in CHATS]

    return dense_and_cut("smollm2", SMOLLM2_DROP, chat_prompts, 24, tmp_path_factory)


@pytest.mark.parametrize("which", ["dense", "pruned"])
def test_smollm2_greedy_equals_transformers(worker, smollm2, which):
    dirs, prompts, expected = smollm2
    worker.load(dirs[which], max_model_len=512)
    got = worker.greedy(prompts, 24)
    assert_same_greedy(got, expected[which])
    layers = json.loads((dirs[which] / "config.json").read_text())["num_hidden_layers"]
    assert layers == (30 if which == "dense" else 23)


# Gemma 3 270M (gemma3_text, a second family): sliding-window and global layers 5:1. The cut takes
# the global layer 5 and three sliding ones, so the kept layers' layer_types are no longer periodic.
GEMMA_DROP = [4, 5, 10, 16]
TEXTS = ["The capital of France is", "def fibonacci(n):", "Three prime numbers are", "A neural network is"]


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory):
    def text_prompts(tokenizer):  # the base model: no chat template
        return [tokenizer(text)["input_ids"] for text in TEXTS]

    return dense_and_cut("gemma3-270m", GEMMA_DROP, text_prompts, 16, tmp_path_factory)


@pytest.mark.parametrize("which", ["dense", "pruned"])
def test_gemma3_greedy_equals_transformers(worker, gemma3, which):
    dirs, prompts, expected = gemma3
    worker.load(dirs[which], max_model_len=512)
    assert_same_greedy(worker.greedy(prompts, 16), expected[which])
    config = json.loads((dirs[which] / "config.json").read_text())
    pattern = (["sliding_attention"] * 5 + ["full_attention"]) * 3
    kept = [i for i in range(18) if which == "dense" or i not in GEMMA_DROP]
    assert config["num_hidden_layers"] == len(kept) and config["layer_types"] == [pattern[i] for i in kept]


# ----------------------------------------------------------------------------- the embedded VLM

LLAVA_CUTS = {"dense": [], "first": [0], "middle": [6], "last": [11]}


@pytest.fixture(scope="module")
def llava_samples(tmp_path_factory):
    from interlace.data import vqa

    samples = vqa.load_split("test", 1, seed=0)[:4]
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, sample in enumerate(samples):
        paths.append(folder / f"{i}.png")  # PNG: the pixels vLLM reads are the ones transformers sees
        sample["images"][0].save(paths[-1])
    return samples, paths


@pytest.mark.parametrize("cut", list(LLAVA_CUTS))
def test_embedded_llava_greedy_equals_transformers(worker, llava_samples, cut, tmp_path):
    from interlace.data.chat import prompt_text, tokenize
    from interlace.loading import load_model

    samples, images = llava_samples
    model, processor = load_model("embedded", torch.float32, "cpu")
    if LLAVA_CUTS[cut]:
        remove_layers(model, LLAVA_CUTS[cut])
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    texts = [prompt_text(processor, s) for s in samples]
    inputs = [tokenize(processor, [s], [t]) for s, t in zip(samples, texts)]
    expected = reference(model, inputs, 8)
    worker.load(tmp_path / "ckpt", model_impl="transformers", max_model_len=256)
    prompt_ids, got = worker.greedy(texts, 8, images, return_prompts=True)
    assert prompt_ids == [i["input_ids"][0].tolist() for i in inputs]  # same tokens, image tokens expanded alike
    assert_same_greedy(got, expected)


def test_native_llava_class_needs_torchvision(worker):
    # Pins the limit documented in interlace.speed.vllm: when this fails, vLLM's own LLaVA class loads
    # here and the README's "Serve it" limits need updating.
    from interlace.embedded import MODEL_DIR

    with pytest.raises(VllmError, match="No module named 'torchvision'|failed to be inspected"):
        worker.load(MODEL_DIR, max_model_len=256)


# ------------------------------------------------------------------------------ bench and errors


def test_bench_engine_vllm_command(cli, tmp_path):
    tiny_checkpoint("qwen3", [], tmp_path / "dense")
    tiny_checkpoint("qwen3", [1, 2, 3], tmp_path / "pruned")
    args = ["bench", str(tmp_path / "dense"), str(tmp_path / "pruned"), "--engine", "vllm", "--eager",
            "--prompt-tokens", "16", "--new-tokens", "4", "--repeats", "2", "--warmup", "1",
            "--json", str(tmp_path / "bench.json")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "FLOP bound" in result.output and "vllm" in result.output
    data = json.loads((tmp_path / "bench.json").read_text())
    assert (data["a"]["num_layers"], data["b"]["num_layers"]) == (6, 3)
    assert data["prefill_flop_bound"] > 1 and data["decode_speedup"] > 0 and len(data["b"]["runs"]) == 2
    assert data["machine"]["engine"].startswith("vllm 0.32.0")


def test_missing_vllm_environment_says_how_to_make_it(tmp_path):
    with pytest.raises(VllmError, match="make vllm-setup"):
        VllmWorker(tmp_path / "no-venv" / "bin" / "python")


@pytest.mark.parametrize(("args", "message"), [
    (["--engine", "tgi"], "--engine must be transformers or vllm"),
    (["--engine", "vllm", "--device", "cuda"], "--engine vllm compares two local checkpoints on the CPU"),
    (["--engine", "vllm", "--image-size", "64x64"], "--engine vllm times text prompts only"),
])
def test_bench_engine_bad_flags(cli, tmp_path, args, message):
    tiny_checkpoint("llama", [], tmp_path / "a")
    result = CliRunner().invoke(cli, ["bench", str(tmp_path / "a"), str(tmp_path / "a"), *args])
    assert result.exit_code == 2 and message in result.output, result.output
