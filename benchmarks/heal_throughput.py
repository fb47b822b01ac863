"""Healing throughput: data prepared on the training loop and padded in file order (before) vs
prepared in DataLoader workers and length-grouped within each optimizer step (after).

Both are the same ``heal`` with other ``HealConfig`` data fields, so before and after run side by
side in one process: "before" is ``data_workers=0, length_grouping=False`` (the loop that encoded
every step's samples between optimizer steps), "after" is ``data_workers=--workers,
length_grouping=True``, and "packed" adds ``packing=True`` (sdpa with transformers' packed-sequence
mask on CPU). Every round heals a fresh copy of the same cut model with each variant, in
alternating order; figures are medians over rounds, and ratios medians of per-round ratios, so the
drift of a shared machine cancels.

Per variant: samples/s and answer tokens/s of the whole heal; the share of the step loop spent
waiting for the next step's data; padding as a share of the token positions the forwards
processed; and the loop's time against its FLOP bound: ``heal_step_flops`` over the real (unpadded)
sequence lengths of the text decoder, at this machine's measured fp32 matmul rate on the torch
threads used (so 1.0 would be matmul peak with no padding and no other work). The losses of
"after" must equal "before" within float rounding (same samples per step).

    .venv/bin/python benchmarks/heal_throughput.py --rounds 3 --json embedded.json
    .venv/bin/python benchmarks/heal_throughput.py --data mix --rounds 3           # text-only and image rows
    .venv/bin/python benchmarks/heal_throughput.py --model smollm2 --samples 256 --rounds 2 --json smollm2.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from interlace.arch import get_arch
from interlace.calibration import compute_scores
from interlace.data import sources
from interlace.heal.data import StepDataset, step_order
from interlace.heal.loop import HealConfig, heal
from interlace.loading import load_model
from interlace.methods import select_layers
from interlace.speed.flops import heal_step_flops
from interlace.surgery import remove_layers

VARIANTS = {
    "before": dict(data_workers=0, length_grouping=False, packing=False),
    "after": dict(length_grouping=True, packing=False),
    "packed": dict(length_grouping=True, packing=True),
}


def matmul_rate(device: torch.device, dtype: torch.dtype, seconds: float = 1.0) -> float:
    """FLOP/s of square matmuls on ``device`` (this process's torch threads)."""
    n = 1024 if device.type == "cpu" else 8192
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    (a @ b).sum().item()  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        (a @ b).sum().item()
        done += 1
    return done * 2 * n**3 / (time.perf_counter() - start)


def finevision_like(samples: list[dict]) -> list[dict]:
    """A FineVision-like mix from chat samples with images: a third keep their image, a third
    become text-only (a few dozen tokens), a third multi-turn with their image (3 turns)."""
    mixed = []
    for i, sample in enumerate(samples):
        if i % 3 == 1:
            mixed.append({**sample, "images": []})
        elif i % 3 == 2:
            turns = [t for s in samples[i : i + 3] for t in s["texts"]][:3]
            mixed.append({**sample, "texts": turns})
        else:
            mixed.append(sample)
    return mixed


def flop_bound_seconds(cut, processor, samples, survivors, config: HealConfig, rate: float) -> float:
    """Seconds the heal's steps would take at ``rate`` FLOP/s on the real (unpadded) tokens."""
    text = cut.config.get_text_config(decoder=True)
    dataset = StepDataset(processor, samples, step_order(len(samples), config), config)
    lengths = []
    for step in range(len(dataset)):
        for batch in dataset[step].micro_batches:
            mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"]))
            lengths += mask.sum(dim=1).tolist() if "attention_mask" in batch else []
            if "attention_mask" not in batch:  # packed: sample lengths from the restarting positions
                starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [batch["input_ids"].shape[1]]
                lengths += [b - a for a, b in zip(starts, starts[1:])]
    return heal_step_flops(text, lengths, survivors) / rate


def one_heal(cut, processor, samples, survivors, config: HealConfig) -> dict:
    model = copy.deepcopy(cut)
    result = heal(model, processor, samples, survivors, config, progress=False)
    return {
        "wall_s": result.wall_seconds, "loop_s": result.step_seconds, "data_wait_s": result.data_wait_seconds,
        "samples": result.samples - result.skipped_samples, "answer_tokens": result.answer_tokens,
        "tokens": result.tokens, "padding_tokens": result.padding_tokens, "losses": result.losses,
    }


def summarise(runs: list[dict], bound_s: float) -> dict:
    med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    return {
        "wall_s": med("wall_s"),
        "samples_per_s": statistics.median(r["samples"] / r["wall_s"] for r in runs),
        "answer_tokens_per_s": statistics.median(r["answer_tokens"] / r["wall_s"] for r in runs),
        "data_wait_share": statistics.median(r["data_wait_s"] / r["loop_s"] for r in runs),
        "padding_share": runs[0]["padding_tokens"] / runs[0]["tokens"],
        "loop_over_flop_bound": statistics.median(r["loop_s"] for r in runs) / bound_s,
        "flop_bound_s": bound_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a checkpoint, a zoo name (smollm2) or none for the embedded model")
    parser.add_argument("--data", default=None, help="data spec, or 'mix' (FineVision-like: text-only, image and multi-turn rows "
                        "from the embedded data); default: embedded, or pydocs with --model")
    parser.add_argument("--samples", type=int, default=None, help="healing samples (default 512 embedded, 256 with --model)")
    parser.add_argument("--batch-size", type=int, default=32, help="optimizer step (the paper's 32)")
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers of the 'after' variants")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default="before,after,packed")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    load_before = os.getloadavg()[0]
    model, processor = load_model(args.model, device="cpu")
    data = args.data or ("embedded" if args.model is None else "pydocs")
    count = args.samples or (512 if args.model is None else 256)
    samples = sources.load_samples("embedded" if data == "mix" else data, "train", count, seed=0)
    if data == "mix":
        samples = finevision_like(samples)
    calib = sources.load_samples("embedded" if data == "mix" else data, "calib", 32, seed=0)
    plan = select_layers("interlace", compute_scores(model, processor, calib, progress=False), 0.25,
                         protected=get_arch(model).protected)
    cut = copy.deepcopy(model)
    remove_layers(cut, plan.dropped)
    survivors = plan.finetuned_after_cut
    del model
    rate = matmul_rate(torch.device("cpu"), torch.float32)
    base = dict(lr=1e-4, warmup_ratio=0.0, batch_size=args.batch_size, micro_batch_size=args.micro_batch_size,
                mixed_precision="no", seed=0)
    configs = {}
    for name in args.variants.split(","):
        fields = {"data_workers": args.workers, **VARIANTS[name]}
        configs[name] = HealConfig(**base, **fields)
    bounds = {n: flop_bound_seconds(cut, processor, samples, survivors, c, rate) for n, c in configs.items()}

    runs: dict[str, list[dict]] = {n: [] for n in configs}
    for r in range(args.rounds):
        for name in configs if r % 2 == 0 else reversed(configs):
            runs[name].append(one_heal(cut, processor, samples, survivors, configs[name]))
            print(f"round {r} {name}: {runs[name][-1]['wall_s']:.1f} s, waited {runs[name][-1]['data_wait_s']:.2f} s", flush=True)

    out = {
        "model": args.model or "embedded", "data": data, "samples": len(samples), "batch_size": args.batch_size,
        "micro_batch_size": args.micro_batch_size, "workers": args.workers, "threads": args.threads,
        "rounds": args.rounds, "dropped": plan.dropped, "survivors_after_cut": survivors,
        "matmul_gflops": rate / 1e9, "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                                                 "torch": torch.__version__},
        "variants": {n: {**summarise(runs[n], bounds[n]), "config": {k: getattr(configs[n], k) for k in
                                                                    ("data_workers", "length_grouping", "packing")}}
                     for n in configs},
        "runs": runs,
    }
    if "before" in runs:
        reference = runs["before"][0]["losses"]
        for name in configs:
            if name != "before":
                diffs = [abs(a - b) / max(abs(a), 1e-12) for a, b in zip(reference, runs[name][0]["losses"])]
                out["variants"][name]["max_rel_loss_diff_vs_before"] = max(diffs)
                out["variants"][name]["wall_over_before"] = statistics.median(
                    a["wall_s"] / b["wall_s"] for a, b in zip(runs[name], runs["before"]))
    out["load_average"] = [load_before, os.getloadavg()[0]]

    print(f"\n{out['model']} on {data}: {len(samples)} samples, steps of {args.batch_size} in micro-batches of "
          f"{args.micro_batch_size}, {args.threads} torch thread(s), {args.rounds} rounds, "
          f"matmul {rate / 1e9:.0f} GFLOP/s, load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    print("| variant | wall s | samples/s | answer tok/s | data wait | padding | loop / FLOP bound | wall / before | max loss diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, v in out["variants"].items():
        print(f"| {name} | {v['wall_s']:.1f} | {v['samples_per_s']:.1f} | {v['answer_tokens_per_s']:.0f} "
              f"| {v['data_wait_share']:.1%} | {v['padding_share']:.1%} | {v['loop_over_flop_bound']:.2f} "
              f"| {v.get('wall_over_before', 1.0):.3f} | {v.get('max_rel_loss_diff_vs_before', 0.0):.1e} |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
