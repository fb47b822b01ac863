"""Prefill and decode speed of Qwen3-VL-8B/4B-shaped models, dense vs 9 of 36 layers removed, on one GPU.

The paper reports a 1.18x prefill speedup on Qwen3-VL-8B with 9 of 36 layers removed (arXiv
2511.19676, its Qwen3-VL-8B results). This script measures that on real sizes without downloading anything: the models are
built from a ``Qwen3VLConfig`` with the released shapes and random bf16 weights, initialised
directly on the GPU; the pruned copy loses 9 non-DeepStack layers chosen like INTERLACE (the first
layer of 9 disjoint triplets after the DeepStack layers 0..2). Speed does not depend on which
layers go (they all have the same shape) nor on the weights, so random weights time the same.

Images are built by hand in the Qwen-VL processor's layout (the processor needs torchvision):
448x448 -> 28x28 patches of 16 -> 196 image tokens; 1024x1024 -> 64x64 patches -> 1024 tokens.

    python benchmarks/gpu_qwen3vl_speed.py                  # 8B and 4B, 448x448 and 1024x1024 (~3-5 min)
    python benchmarks/gpu_qwen3vl_speed.py --sizes 8b --json gpu_speed.json
    python benchmarks/gpu_qwen3vl_speed.py --tiny           # tiny shapes on CPU: checks the plumbing only

Without a CUDA device (and without --tiny) it prints "skipped: no CUDA device" and exits 0.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import sys
from pathlib import Path

import torch
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

from interlace.speed.bench import BenchSettings, benchmark, parse_image_size
from interlace.surgery import remove_layers

# Released shapes (Qwen3-VL-8B/4B-Instruct config.json). 4B: 32 heads of 128 on a 2560-wide stream.
TEXT = {
    "8b": dict(hidden_size=4096, intermediate_size=12288),
    "4b": dict(hidden_size=2560, intermediate_size=9728),
}
TIED = {"8b": False, "4b": True}
TEXT_COMMON = dict(
    num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
    max_position_embeddings=262144,
    rope_parameters=dict(
        rope_type="default", rope_theta=5_000_000.0, mrope_section=[24, 20, 20], mrope_interleaved=True
    ),
)
VISION = dict(
    depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, patch_size=16, spatial_merge_size=2,
    temporal_patch_size=2, deepstack_visual_indexes=[8, 16, 24], num_position_embeddings=2304,
)
# --tiny: the same structure (12 layers, 3 DeepStack features, 25% removed) at toy sizes.
TINY_TEXT = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=12, num_attention_heads=4, num_key_value_heads=2,
    head_dim=16, vocab_size=256, max_position_embeddings=1024,
    rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[2, 3, 3]),
)
TINY_VISION = dict(
    depth=3, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16, spatial_merge_size=2,
    temporal_patch_size=2, deepstack_visual_indexes=[0, 1, 2], num_position_embeddings=16,
)
TINY_IDS = dict(image_token_id=3, video_token_id=6, vision_start_token_id=4, vision_end_token_id=5)


def make_config(size: str, tiny: bool = False) -> Qwen3VLConfig:
    """The Qwen3-VL config of ``size`` ("8b" or "4b"), or its toy-sized twin."""
    if tiny:
        return Qwen3VLConfig(text_config=TINY_TEXT, vision_config=dict(TINY_VISION, out_hidden_size=64), **TINY_IDS)
    text = dict(TEXT_COMMON, **TEXT[size])
    vision = dict(VISION, out_hidden_size=text["hidden_size"])
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=TIED[size])


def interleaved_drop(num_layers: int, count: int, protected: int) -> list[int]:
    """INTERLACE-like drop set: the first layer of ``count`` disjoint triplets after the protected prefix."""
    drop = [protected + 3 * k for k in range(count)]
    if drop[-1] + 2 >= num_layers:
        raise ValueError(f"{count} disjoint triplets after layer {protected} do not fit in {num_layers} layers")
    return drop


def build(config: Qwen3VLConfig, device: torch.device, dtype: torch.dtype) -> Qwen3VLForConditionalGeneration:
    """Random-weight model initialised directly on ``device`` (no slow CPU init and copy)."""
    torch.manual_seed(0)
    with device:
        model = Qwen3VLForConditionalGeneration._from_config(config, dtype=dtype)
    return model.eval()


def markdown(rows: list[dict]) -> str:
    head = ("| model | image | prompt tokens (image) | TTFT dense ms | TTFT pruned ms | prefill speedup | FLOP bound "
            "| decode dense tok/s | decode pruned tok/s | decode speedup | FLOP bound "
            "| run memory dense / pruned GiB |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        c, a, b = r["comparison"], r["comparison"].a, r["comparison"].b
        memory = " / ".join(
            "n/a" if x.run_memory_bytes is None else f"{x.run_memory_bytes / 2**30:.2f}" for x in (a, b)
        )
        lines.append(
            f"| {r['size']} ({a.num_layers}->{b.num_layers} layers) | {r['image']} "
            f"| {a.prompt_tokens} ({a.image_tokens}) "
            f"| {a.ttft_s * 1e3:.1f} | {b.ttft_s * 1e3:.1f} | {c.prefill_speedup:.3f}x | {c.prefill_flop_bound:.3f}x "
            f"| {a.decode_tokens_per_s:.1f} | {b.decode_tokens_per_s:.1f} | {c.decode_speedup:.3f}x "
            f"| {c.decode_flop_bound:.3f}x | {memory} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["8b", "4b"], choices=sorted(TEXT))
    parser.add_argument("--images", nargs="+", default=["448x448", "1024x1024"], help="HxW of the one image")
    parser.add_argument("--prompt-tokens", type=int, default=128, help="text tokens besides the image")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write every comparison here")
    parser.add_argument(
        "--tiny", action="store_true", help="toy sizes on CPU in fp32 (tests the script, times nothing real)"
    )
    args = parser.parse_args(argv)

    if args.tiny:
        device, dtype = torch.device("cpu"), torch.float32
        sizes, images = ["tiny"], ["64x64", "128x96"]
        settings = dict(prompt_tokens=16, new_tokens=4, repeats=1, warmup=0)
    elif not torch.cuda.is_available():
        print("skipped: no CUDA device (this benchmark needs a GPU; --tiny checks the script on CPU)")
        return 0
    else:
        device, dtype, sizes, images = torch.device("cuda"), torch.bfloat16, args.sizes, args.images
        settings = dict(
            prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, repeats=args.repeats, warmup=args.warmup
        )
    try:
        image_sizes = [parse_image_size(x) for x in images]
    except ValueError as error:
        print(f"error: {str(error).replace('--image-size', '--images')}", file=sys.stderr)
        return 2

    rows = []
    for size in sizes:
        config = make_config(size, tiny=args.tiny)
        layers = config.text_config.num_hidden_layers
        drop = interleaved_drop(layers, layers // 4, len(config.vision_config.deepstack_visual_indexes))
        dense = build(config, device, dtype)
        pruned = copy.deepcopy(dense)
        remove_layers(pruned, drop)
        print(f"{size}: removed layers {drop} of {layers}", flush=True)
        for text, image in zip(images, image_sizes):
            bench_settings = BenchSettings(image_size=image, **settings)
            comparison = benchmark(dense, pruned, None, bench_settings, names=("dense", "pruned"))
            rows.append({"size": size, "image": text, "comparison": comparison})
            print(f"  {text}: prefill {comparison.prefill_speedup:.3f}x (bound {comparison.prefill_flop_bound:.3f}x), "
                  f"decode {comparison.decode_speedup:.3f}x (bound {comparison.decode_flop_bound:.3f}x)", flush=True)
        del dense, pruned
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    machine = rows[0]["comparison"].machine
    print(f"\n{machine.get('gpu', machine.get('cpu'))}, torch {machine['torch']}, "
          f"transformers {machine['transformers']}, "
          f"{str(dtype).removeprefix('torch.')}; medians of {settings['repeats']} alternating runs, "
          f"{settings['new_tokens']} new tokens\n")
    print(markdown(rows))
    if args.json:
        data = [{"size": r["size"], "image": r["image"], **r["comparison"].to_json()} for r in rows]
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
