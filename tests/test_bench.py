"""interlace.speed.bench: the FLOP formula on hand-computed cases, alternating runs, JSON and CLI, GPU script on CPU.

No test asserts a timing: speed targets live in benchmarks/ (a timed assert fails on a busy machine, not on a slow change).
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, Qwen3VLConfig
from typer.testing import CliRunner

from interlace.speed import bench
from interlace.speed.bench import BenchSettings, benchmark, build_inputs
from interlace.speed.flops import TokenCounts, causal_pairs, decoder_flops, heal_step_flops, vision_flops
from interlace.surgery import remove_layers
from tiny_models import VOCAB, dense_model

ROOT = Path(__file__).resolve().parents[1]

# h=8, 2 query heads and 1 kv head of 4, MLP 16, vocab 10, 2 layers.
TINY_LM = LlamaConfig(hidden_size=8, num_attention_heads=2, num_key_value_heads=1, head_dim=4, intermediate_size=16,
                      vocab_size=10, num_hidden_layers=2)


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------- FLOP formula


@pytest.mark.parametrize(("past", "new", "window", "pairs"), [
    (0, 5, None, 15),   # 1+2+3+4+5
    (1, 2, None, 5),    # 2+3
    (0, 5, 2, 9),       # 1+2+2+2+2
    (3, 2, 2, 4),       # 2+2
    (0, 3, 10, 6),      # window longer than the sequence
])
def test_causal_pairs(past, new, window, pairs):
    assert causal_pairs(past, new, window) == pairs


def test_decoder_flops_prefill_by_hand():
    # Per layer on 3 tokens: q,k,v 2*3*8*(8+8) = 768, o 2*3*8*8 = 384, attention 4*2*4*6 pairs = 192,
    # MLP 6*3*8*16 = 2304 -> 3648; two layers 7296; lm_head on the last position 2*8*10 = 160.
    assert decoder_flops(TINY_LM, new=3, past=0) == 7456


def test_decoder_flops_decode_step_by_hand():
    # One token after 3 cached: projections 256 + 128, attention 4*2*4*4 pairs = 128, MLP 768 -> 1280 per layer.
    assert decoder_flops(TINY_LM, new=1, past=3) == 2 * 1280 + 160


def test_heal_step_flops_by_hand():
    # Per layer on 3 tokens: q,k,v 768, o + MLP 2688, attention 192 (see above); lm_head on every position 480.
    forward = 2 * 3648 + 480
    assert heal_step_flops(TINY_LM, [3], []) == forward == decoder_flops(TINY_LM, 3, logits=3)
    # Layer 1 alone: its activation gradients except q,k,v's input (2688 + 2 * 192), its weight
    # gradients (768 + 2688), and the lm_head's activation gradient; layer 0 needs nothing.
    assert heal_step_flops(TINY_LM, [3], [1]) == forward + 3072 + 3456 + 480
    # Both layers: layer 1's activation gradients now include q,k,v's (768 + 2688 + 384).
    assert heal_step_flops(TINY_LM, [3], [0, 1]) == forward + 3072 + 3456 + 3840 + 3456 + 480
    assert heal_step_flops(TINY_LM, [3, 3], [1]) == 2 * heal_step_flops(TINY_LM, [3], [1])
    assert heal_step_flops(TINY_LM, [3], [1], train_lm_head=True) == heal_step_flops(TINY_LM, [3], [1]) + 480


def test_sliding_window_layers_attend_to_fewer_keys():
    config = copy.deepcopy(TINY_LM)
    config.layer_types, config.sliding_window = ["sliding_attention", "full_attention"], 2
    # Layer 0 sees 1+2+2 = 5 pairs instead of 6: one pair less is 4*2*4 = 32 FLOPs.
    assert decoder_flops(TINY_LM, 3) - decoder_flops(config, 3) == 32


def _tiny_qwen3_vl(deepstack: list[int]) -> Qwen3VLConfig:
    vision = dict(depth=1, hidden_size=4, intermediate_size=8, num_heads=1, patch_size=2, temporal_patch_size=2,
                  spatial_merge_size=2, out_hidden_size=6, in_channels=3, deepstack_visual_indexes=deepstack)
    text = dict(hidden_size=6, num_attention_heads=1, num_key_value_heads=1, head_dim=6, intermediate_size=8,
                vocab_size=10, num_hidden_layers=2)
    return Qwen3VLConfig(vision_config=vision, text_config=text)


def test_qwen3_vl_vision_flops_by_hand():
    # One 4x4 image -> 2x2 patches of 2 -> 1 image token. Patch embedding 2*4*(3*2*2*2)*4 = 768;
    # the block: 8*4*4*4 = 512 projections + 4*4*4*4 = 256 attention + 2*2*4*4*8 = 512 MLP = 1280;
    # merger k = 4*2*2 = 16: 2*1*(16*16 + 16*6) = 704, once more for the one DeepStack merger.
    counts = TokenCounts(text_tokens=0, image_tokens=1, vision_seq_lens=(4,))
    assert vision_flops(_tiny_qwen3_vl([0]), counts) == 768 + 1280 + 2 * 704
    assert vision_flops(_tiny_qwen3_vl([]), counts) == 768 + 1280 + 704  # DeepStack feature dropped by the cut
    assert vision_flops(_tiny_qwen3_vl([0]), TokenCounts(text_tokens=5)) == 0  # no image, no vision tower


def test_flop_bound_of_a_cut_lm_is_between_one_and_the_layer_ratio():
    dense, pruned = dense_model("llama"), dense_model("llama")
    remove_layers(pruned, [1, 4])
    counts = TokenCounts(text_tokens=64)
    (prefill_a, decode_a), (prefill_b, decode_b) = (bench.forward_flops(m.config, counts, 8) for m in (dense, pruned))
    assert 1 < prefill_a / prefill_b < 6 / 4
    assert 1 < decode_a / decode_b < prefill_a / prefill_b  # lm_head weighs more per decoded token


def test_removing_a_full_attention_layer_saves_more_than_a_sliding_one():
    # Tiny Qwen3: layers 0-1 attend to everything, layers 2-5 to a window of 5 tokens.
    full, sliding = dense_model("qwen3"), dense_model("qwen3")
    remove_layers(full, [1])
    remove_layers(sliding, [4])
    counts = TokenCounts(text_tokens=64)
    assert bench.forward_flops(full.config, counts, 2)[0] < bench.forward_flops(sliding.config, counts, 2)[0]


# ------------------------------------------------------------------------------------- inputs


def test_qwen_vl_image_shapes_at_real_size():
    config = _script("gpu_qwen3vl_speed").make_config("8b")
    for (height, width), tokens in (((448, 448), 196), ((1024, 1024), 1024), ((440, 600), 14 * 19)):
        inputs, counts = build_inputs(config, None, BenchSettings(prompt_tokens=10, image_size=(height, width)))
        grid = inputs["image_grid_thw"][0].tolist()
        assert grid[0] == 1 and grid[1] * grid[2] == 4 * tokens
        assert inputs["pixel_values"].shape == (4 * tokens, 3 * 2 * 16 * 16)
        assert counts.image_tokens == tokens and counts.text_tokens == 10 + 2  # vision start/end are text
        assert int(inputs["mm_token_type_ids"].sum()) == tokens
        assert inputs["input_ids"][0, 0] == config.vision_start_token_id


def test_text_prompt_avoids_special_tokens():
    config = dense_model("qwen3").config
    inputs, counts = build_inputs(config, None, BenchSettings(prompt_tokens=300))
    ids = inputs["input_ids"][0]
    assert counts == TokenCounts(text_tokens=300) and ids.shape == (300,) and int(ids.max()) < VOCAB
    assert not set(ids.tolist()) & {config.pad_token_id, config.bos_token_id, config.eos_token_id} - {None}


def test_llava_image_goes_through_its_processor():
    from embedded_build import build_config, build_processor

    config = build_config(hidden_size=64, num_layers=2, vision_hidden_size=32, vision_layers=1)
    inputs, counts = build_inputs(config, build_processor(), BenchSettings(prompt_tokens=8, image_size=(50, 70)))
    assert counts.image_tokens == config.image_seq_length == 16
    assert counts.vision_seq_lens == (17,)  # 4x4 patches + CLIP's CLS token
    assert inputs["pixel_values"].shape == (1, 3, 32, 32)


def test_errors_say_what_to_do():
    with pytest.raises(ValueError, match="text-only model; use --image-size none"):
        build_inputs(dense_model("qwen3").config, None, BenchSettings(image_size=(32, 32)))
    with pytest.raises(ValueError, match="needs its processor"):
        build_inputs(dense_model("llava").config, None, BenchSettings(image_size=(32, 32)))
    with pytest.raises(ValueError, match="new_tokens must be >= 2.*repeats must be >= 1"):
        BenchSettings(new_tokens=1, repeats=0)
    with pytest.raises(ValueError, match="must look like 448x448"):
        bench.parse_image_size("448")
    assert bench.parse_image_size("224x320") == (224, 320) and bench.parse_image_size("none") is None


# ---------------------------------------------------------------------------------- measuring


def test_schedule_alternates_after_warmup():
    assert bench.schedule(["A", "B"], warmup=1, repeats=2) == [
        ("A", True), ("B", True), ("A", False), ("B", False), ("A", False), ("B", False)]


def test_benchmark_alternates_models_and_pairs_rounds(monkeypatch):
    dense, pruned = dense_model("qwen3"), dense_model("qwen3")
    remove_layers(pruned, [0, 1])
    calls: list[str] = []
    # Round r takes (r+1) s for A and (r+1)/2 s for B: drift between rounds, a 2x speedup within each.
    times = {"A": iter([9.0, 1.0, 2.0, 3.0]), "B": iter([9.0, 0.5, 1.0, 1.5])}

    def fake_run(model, inputs, new_tokens, device, start_memory):
        name = "A" if model is dense else "B"
        calls.append(name)
        t = next(times[name])
        return bench.Run(t, 10 / t, 100, t, 10 / t)

    monkeypatch.setattr(bench, "_run_once", fake_run)
    result = benchmark(dense, pruned, settings=BenchSettings(prompt_tokens=4, repeats=3, warmup=1))
    assert calls == ["A", "B"] * 4
    assert result.a.ttft_s == 2.0 and result.b.ttft_s == 1.0  # the warmup round (9 s) is left out
    assert result.prefill_speedup == pytest.approx(2.0) and result.decode_speedup == pytest.approx(2.0)
    assert [r["ttft_s"] for r in result.a.runs] == [1.0, 2.0, 3.0]


def test_benchmark_json_shape(tmp_path):
    dense, pruned = dense_model("qwen3_vl"), dense_model("qwen3_vl")
    remove_layers(pruned, [3, 4])
    settings = BenchSettings(prompt_tokens=8, image_size=(64, 64), new_tokens=3, repeats=2, warmup=0)
    comparison = benchmark(dense, pruned, settings=settings, names=("dense", "pruned"))
    comparison.save(tmp_path / "bench.json")
    data = json.loads((tmp_path / "bench.json").read_text())
    assert {"settings", "a", "b", "prefill_speedup", "decode_speedup", "prefill_flop_bound", "decode_flop_bound",
            "memory_method", "machine"} <= set(data)
    assert data["a"]["num_layers"] == 6 and data["b"]["num_layers"] == 4
    assert data["a"]["image_tokens"] == 4 and data["a"]["prompt_tokens"] == 8 + 2 + 4
    assert len(data["a"]["runs"]) == len(data["b"]["runs"]) == 2
    assert data["a"]["ttft_s"] > 0 and data["b"]["decode_tokens_per_s"] > 0
    assert 1 < data["prefill_flop_bound"] < 6 / 4 and 1 < data["decode_flop_bound"] < 6 / 4
    assert data["settings"]["image_size"] == [64, 64] and data["machine"]["threads"] == 1
    assert torch.get_num_threads() == 1  # restored


def test_fast_mode_defaults_to_an_image_for_vlms():
    model = dense_model("qwen3_vl")
    comparison = benchmark(model, fast=True)
    assert comparison.b is None and comparison.prefill_speedup is None
    assert comparison.settings.image_size == bench.DEFAULT_IMAGE and comparison.settings.repeats == 2
    assert comparison.a.image_tokens == (448 // 32) ** 2
    with pytest.raises(ValueError, match="either settings or fast"):
        benchmark(model, settings=BenchSettings(), fast=True)


# ------------------------------------------------------------------------------ CLI and scripts


def _save(model, path: Path) -> Path:
    from embedded_build import build_tokenizer

    model.save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return path


def test_bench_command(cli, tmp_path):
    model = dense_model("qwen3")
    dense = _save(model, tmp_path / "dense")
    remove_layers(model, [2, 3, 4])
    pruned = _save(model, tmp_path / "pruned")
    args = ["bench", str(dense), str(pruned), "--fast", "--prompt-tokens", "8", "--new-tokens", "3", "--repeats", "1",
            "--warmup", "0", "--device", "cpu", "--json", str(tmp_path / "bench.json")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "FLOP bound" in result.output and "TTFT" in result.output
    data = json.loads((tmp_path / "bench.json").read_text())
    assert (data["a"]["name"], data["b"]["name"]) == ("dense", "pruned")
    assert data["settings"]["image_size"] is None and data["settings"]["prompt_tokens"] == 8


@pytest.mark.parametrize(("flag", "message"), [
    (["--image-size", "big"], "--image-size must look like 448x448"),
    (["--new-tokens", "1"], "--new-tokens must be >= 2"),
    (["--dtype", "int8"], "--dtype must be float32"),
])
def test_bench_command_bad_flags(cli, tmp_path, flag, message):
    result = CliRunner().invoke(cli, ["bench", str(tmp_path), *flag])
    assert result.exit_code == 2 and message in result.output


def test_gpu_script_tiny_on_cpu(capsys):
    script = _script("gpu_qwen3vl_speed")
    assert script.interleaved_drop(36, 9, 3) == [3, 6, 9, 12, 15, 18, 21, 24, 27]
    assert script.main(["--tiny"]) == 0
    out = capsys.readouterr().out
    assert "| tiny (12->9 layers) | 64x64 | 22 (4) |" in out and "| tiny (12->9 layers) | 128x96 | 30 (12) |" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_gpu_script_skips_without_cuda(capsys):
    assert _script("gpu_qwen3vl_speed").main([]) == 0
    assert "skipped: no CUDA device" in capsys.readouterr().out


def test_flop_bound_script_parses():
    script = _script("bench_flop_bound")
    assert script.CONFIG["num_hidden_layers"] * 0.25 == len(script.DROP)
