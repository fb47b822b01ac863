"""Why INTERLACE trails on SmolLM2-135M (docs/benchmarks.md): the same plan without healing, with
a larger learning rate, with distillation healing, and with a higher budget; ShortGPT's plan with the
INTERLACE survivors' budget as a reference. One process, 2 threads; prints a markdown table.

    python benchmarks/smollm2_interlace_probe.py --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch

from interlace.calibration import compute_scores
from interlace.data import sources
from interlace.evaluation.suites import TEXT
from interlace.heal.loop import HealConfig
from interlace.loading import load_model
from interlace.methods import select_layers
from interlace.stages import pruned_copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calib", type=int, default=16)
    parser.add_argument("--train", type=int, default=128)
    parser.add_argument("--n", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model("smollm2")
    calib = sources.load_samples("pydocs", "calib", args.calib)
    train = sources.load_samples("pydocs", "train", 2 * args.train)
    scores = compute_scores(model, tokenizer, calib, progress=False)
    dense = TEXT.evaluate(model, tokenizer, args.n, progress=False)
    base = dict(batch_size=8, micro_batch_size=8)
    runs = [
        ("interlace", "no heal", None, args.train),
        ("interlace", "ce, lr 3e-4", HealConfig(lr=3e-4, **base), args.train),
        ("interlace", "ce, lr 1e-3", HealConfig(lr=1e-3, **base), args.train),
        ("interlace", "kd, lr 3e-4", HealConfig(lr=3e-4, loss="kd", **base), args.train),
        ("interlace", "ce, lr 3e-4, 2x budget", HealConfig(lr=3e-4, **base), 2 * args.train),
    ]
    print(f"dense perplexity {dense['perplexity']:.2f}")
    print("| method | plan dropped | healing | samples | perplexity | retention (dense ppl / ppl) | wall s |")
    print("|---|---|---|---|---|---|---|")
    for method, label, heal_config, count in runs:
        started = time.perf_counter()
        plan = select_layers(method, scores, 0.25)
        pruned = pruned_copy(model, tokenizer, plan, train[:count] if heal_config else None, heal_config or HealConfig(), calib)
        result = TEXT.evaluate(pruned, tokenizer, args.n, progress=False)
        wall = time.perf_counter() - started
        print(f"| {method} | {plan.dropped} | {label} | {count if heal_config else 0} | {result['perplexity']:.2f} | "
              f"{TEXT.retention(dense, result):.3f} | {wall:.0f} |", flush=True)
        del pruned


if __name__ == "__main__":
    main()
