"""Healing throughput at Qwen3-VL-8B sizes on one GPU: before vs after the DataLoader workers and
length grouping, and with packing; random bf16 weights, nothing downloaded.

The model has Qwen3-VL-8B's text decoder (36 layers, 4096 wide, 151,936-token vocabulary) and a
vision tower of its ViT's width and depth (27 layers, 1152 wide, patch 16), as a
``LlavaForConditionalGeneration``: Qwen3VLProcessor needs torchvision for its video processor,
the LLaVA processor only PIL, and a 224x224 image (the paper's max_pixels 50176) is then 196
image tokens, resized and normalised by the processor in the DataLoader workers like a real run.
9 of 36 layers are cut as INTERLACE would (the first of 9 disjoint triplets) and their successors
heal, with gradient checkpointing and bf16 autocast. LLaVA's positions are 1-D, so packing runs
(flash-attention 2 where installed, else sdpa with transformers' packed-sequence mask).

The data is FineVision-like: image rows (images of 640x480 to resize), text-only rows and 3-turn
rows, built from the embedded VQA suite. The figures are ``benchmarks/heal_throughput.py``'s
(samples/s, answer tokens/s, data wait share, padding share, loop time against the FLOP bound at
the measured bf16 matmul rate) plus model FLOPs utilisation against ``--peak-tflops`` (H100 SXM
bf16 dense: 989). FLOPs count the text decoder's training step on real tokens (``heal_step_flops``)
and the frozen vision tower's forward (``vision_flops``).

    python benchmarks/gpu_heal_throughput.py --json gpu_heal.json          # ~4-6 min on an H100
    python benchmarks/gpu_heal_throughput.py --tiny                        # toy sizes on CPU: plumbing only

Without a CUDA device (and without --tiny) it prints "skipped: no CUDA device" and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # embedded_build: the toy's builder

import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from embedded_build import CHAT_TEMPLATE, build_tokenizer  # noqa: E402
from interlace.data import vqa
from interlace.heal.data import StepDataset, step_order
from interlace.heal.loop import HealConfig, heal
from interlace.speed.flops import TokenCounts, heal_step_flops, vision_flops
from interlace.surgery import remove_layers

TEXT = dict(
    model_type="qwen3", hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
    num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=40960, tie_word_embeddings=False,
)
VISION = dict(model_type="clip_vision_model", hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
              num_attention_heads=16, patch_size=16, image_size=224)
TINY_TEXT = dict(TEXT, hidden_size=64, intermediate_size=128, num_hidden_layers=12, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, vocab_size=256)
TINY_VISION = dict(VISION, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
IMAGE = 224
VARIANTS = {
    "before": dict(data_workers=0, length_grouping=False, packing=False),
    "after": dict(length_grouping=True, packing=False),
    "packed": dict(length_grouping=True, packing=True),
}


def build(tiny: bool, device: torch.device, dtype: torch.dtype) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    tokenizer = build_tokenizer()
    config = LlavaConfig(text_config=TINY_TEXT if tiny else TEXT, vision_config=TINY_VISION if tiny else VISION,
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    with device:
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype)
    size = {"height": IMAGE, "width": IMAGE}
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size=size, crop_size=size, do_center_crop=False), tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE, patch_size=VISION["patch_size"], vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return model, processor


def finevision_like(n: int) -> list[dict]:
    """Image rows (640x480 images), text-only rows and 3-turn image rows, a third each."""
    rows = vqa.load_split("calib", n // len(vqa.TASKS) + 3)[: n + 2]
    out = []
    for i, row in enumerate(rows[:n]):
        images = [img.resize((640, 480)) for img in row["images"]]
        if i % 3 == 1:
            out.append({**row, "images": []})
        elif i % 3 == 2:
            out.append({**row, "images": images, "texts": [t for r in rows[i : i + 3] for t in r["texts"]]})
        else:
            out.append({**row, "images": images})
    return out


def matmul_rate(device: torch.device, dtype: torch.dtype, seconds: float = 1.0) -> float:
    n = 1024 if device.type == "cpu" else 8192
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    (a @ b).sum().item()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        (a @ b).sum().item()
        done += 1
    return done * 2 * n**3 / (time.perf_counter() - start)


def step_flops(model, processor, samples, survivors, config: HealConfig) -> float:
    """FLOPs of the whole heal on real tokens: text decoder training step plus vision forward."""
    text = model.config.get_text_config(decoder=True)
    patches = (IMAGE // model.config.vision_config.patch_size) ** 2
    dataset = StepDataset(processor, samples, step_order(len(samples), config), config)
    lengths, images = [], 0
    for step in range(len(dataset)):
        for batch in dataset[step].micro_batches:
            if "attention_mask" in batch:
                lengths += batch["attention_mask"].sum(dim=1).tolist()
            else:
                starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [batch["input_ids"].shape[1]]
                lengths += [b - a for a, b in zip(starts, starts[1:])]
            images += batch["pixel_values"].shape[0] if "pixel_values" in batch else 0
    counts = TokenCounts(text_tokens=0, image_tokens=images * patches, vision_seq_lens=(patches + 1,) * images)
    return heal_step_flops(text, lengths, survivors) + vision_flops(model.config, counts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers of the 'after' variants")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", default="before,after,packed")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100 SXM: 989)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--tiny", action="store_true", help="toy sizes on CPU in fp32 (tests the script, times nothing real)")
    args = parser.parse_args(argv)
    if args.tiny:
        device, dtype, precision = torch.device("cpu"), torch.float32, "no"
        args.samples, args.batch_size, args.micro_batch_size, args.rounds = 16, 8, 4, 1
    elif not torch.cuda.is_available():
        print("skipped: no CUDA device (this benchmark needs a GPU; --tiny checks the script on CPU)")
        return 0
    else:
        device, dtype, precision = torch.device("cuda"), torch.bfloat16, "bf16"

    model, processor = build(args.tiny, device, dtype)
    layers = model.config.text_config.num_hidden_layers
    drop = [3 * k for k in range(layers // 4)]  # the first of each of 9 disjoint triplets
    remove_layers(model, drop)
    survivors = [d - i for i, d in enumerate(drop)]  # each dropped layer's successor, after the cut
    if device.type == "cuda":
        try:
            import flash_attn  # noqa: F401

            model.set_attn_implementation("flash_attention_2")
        except ImportError:
            pass
    attention = model.config._attn_implementation
    samples = finevision_like(args.samples)
    layers_module = model.model.language_model.layers
    start = {i: {k: v.detach().clone() for k, v in layers_module[i].state_dict().items()} for i in survivors}
    base = dict(lr=1e-5, warmup_ratio=0.03, batch_size=args.batch_size, micro_batch_size=args.micro_batch_size,
                mixed_precision=precision, gradient_checkpointing=not args.tiny, seed=0)
    configs = {n: HealConfig(**base, **{"data_workers": args.workers, **VARIANTS[n]}) for n in args.variants.split(",")}
    flops = {n: step_flops(model, processor, samples, survivors, c) for n, c in configs.items()}
    rate = matmul_rate(device, dtype)

    runs: dict[str, list[dict]] = {n: [] for n in configs}
    for r in range(args.rounds):
        for name in configs if r % 2 == 0 else reversed(configs):
            for i, state in start.items():  # every run heals the same starting weights
                layers_module[i].load_state_dict(state)
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            result = heal(model, processor, samples, survivors, configs[name], progress=False)
            runs[name].append({
                "wall_s": result.wall_seconds, "loop_s": result.step_seconds, "data_wait_s": result.data_wait_seconds,
                "samples": result.samples - result.skipped_samples, "answer_tokens": result.answer_tokens,
                "tokens": result.tokens, "padding_tokens": result.padding_tokens, "losses": result.losses,
                "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
            })
            print(f"round {r} {name}: {result.wall_seconds:.1f} s, waited {result.data_wait_seconds:.2f} s", flush=True)

    out = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (--tiny)", "attention": attention,
           "torch": torch.__version__, "samples": len(samples), "batch_size": args.batch_size,
           "micro_batch_size": args.micro_batch_size, "workers": args.workers, "dropped": drop, "survivors": survivors,
           "matmul_tflops": rate / 1e12, "variants": {}, "runs": runs}
    for name, rs in runs.items():
        loop = statistics.median(r["loop_s"] for r in rs)
        out["variants"][name] = {
            "wall_s": statistics.median(r["wall_s"] for r in rs),
            "samples_per_s": statistics.median(r["samples"] / r["wall_s"] for r in rs),
            "answer_tokens_per_s": statistics.median(r["answer_tokens"] / r["wall_s"] for r in rs),
            "data_wait_share": statistics.median(r["data_wait_s"] / r["loop_s"] for r in rs),
            "padding_share": rs[0]["padding_tokens"] / rs[0]["tokens"],
            "loop_over_flop_bound": loop / (flops[name] / rate),
            "mfu": flops[name] / loop / (args.peak_tflops * 1e12),
            "max_rel_loss_diff_vs_before": max(
                (abs(a - b) / max(abs(a), 1e-12) for a, b in zip(runs["before"][0]["losses"], rs[0]["losses"])), default=0.0
            ) if "before" in runs else None,
        }
    print(f"\n{out['device']}, {attention}, {len(samples)} samples, steps of {args.batch_size} in micro-batches of "
          f"{args.micro_batch_size}, {args.workers} workers, matmul {rate / 1e12:.0f} TFLOP/s")
    print("| variant | wall s | samples/s | answer tok/s | data wait | padding | loop / FLOP bound | MFU | max loss diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, v in out["variants"].items():
        print(f"| {name} | {v['wall_s']:.1f} | {v['samples_per_s']:.1f} | {v['answer_tokens_per_s']:.0f} | "
              f"{v['data_wait_share']:.1%} | {v['padding_share']:.1%} | {v['loop_over_flop_bound']:.2f} | {v['mfu']:.1%} | "
              f"{v['max_rel_loss_diff_vs_before'] or 0:.1e} |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
