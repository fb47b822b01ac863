"""What calibration, healing and SLEB cost, against their limits.

Five figures, each measured side by side in one process (rounds alternate the order of the things
compared; a ratio is the median over rounds of the within-round ratio, so drift of a shared machine
slower than a round cancels):

1. calibration: ``compute_scores`` / a plain forward over the same batches (the same tokenisation,
   no hooks). Goal <= 1.10: the hooks and the accumulation cost next to nothing.
2. released scoring: the authors' released style (one sample per forward, ``output_hidden_states``,
   then a cosine and a ``.item()`` per layer pair), written inline below, / ``compute_scores``.
   Keep >= 2x.
3. memory: what calibration adds to the resident model at 64 vs 512 samples (peak RSS on CPU,
   ``max_memory_allocated`` on CUDA, as ``interlace bench``). Goal: flat.
4. healing: a ``heal`` run with only the survivors of an INTERLACE 25% plan trainable / the same
   run with every decoder layer of the cut model trainable, against the FLOP bound of the two layer
   sets (``interlace.speed.flops.heal_step_flops``). Goal: within 5% of the bound.
5. SLEB: one removal step on one calibration batch / a plain forward of that batch, i.e. its cost in
   plain-forward equivalents (per step and per candidate), next to the FLOP ideal.

A timing target is a measurement, not a unit test: run this by hand (minutes on the embedded model,
about half an hour on SmolLM2 on one core).

    .venv/bin/python benchmarks/pipeline_cost.py [--model smollm2] [--data pydocs] [--rounds 3] [--json out.json]
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
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from interlace.arch import get_arch
from interlace.calibration import compute_scores
from interlace.data import sources
from interlace.data.chat import batch_inputs, training_batches
from interlace.heal.loop import HealConfig, heal
from interlace.loading import load_model
from interlace.methods import select_layers
from interlace.methods.sleb import sleb_order
from interlace.speed.bench import _memory_probe
from interlace.speed.flops import decoder_flops, heal_step_flops
from interlace.surgery import remove_layers

KS = (1, 2, 3)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(named: dict[str, Callable[[], object]], rounds: int) -> list[dict[str, float]]:
    """Seconds of each function per round; odd rounds run them in reverse order."""
    results = []
    for r in range(rounds):
        order = list(named) if r % 2 == 0 else list(reversed(named))
        results.append({name: timed(named[name]) for name in order})
    return results


def median_ratio(rounds: list[dict[str, float]], top: str, bottom: str) -> dict[str, float]:
    ratios = [r[top] / r[bottom] for r in rounds]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


# ----------------------------------------------------------------------------- calibration


@torch.no_grad()
def plain_forward(model, processor, samples, batch_size: int) -> None:
    """What compute_scores does without its hooks: the same batches, tokenised the same way."""
    device = next(model.parameters()).device
    for start in range(0, len(samples), batch_size):
        for _, inputs in batch_inputs(processor, samples[start : start + batch_size]):
            model(**{k: v.to(device) for k, v in inputs.items()}, use_cache=False)


@torch.no_grad()
def released_style_scores(model, processor, samples, ks=KS) -> dict[int, list[float]]:
    """s_k the way the authors' released code gets it: batch 1, every hidden state returned by the
    model, then one cosine (and one host sync) per layer pair and k."""
    device = next(model.parameters()).device
    sums: dict[int, list[float]] = {}
    for sample in samples:
        for _, inputs in batch_inputs(processor, [sample]):
            states = model(**{k: v.to(device) for k, v in inputs.items()}, output_hidden_states=True, use_cache=False).hidden_states
            for k in ks:
                row = sums.setdefault(k, [0.0] * (len(states) - k))
                for i in range(len(states) - k):
                    row[i] += torch.nn.functional.cosine_similarity(states[i], states[i + k], dim=-1).mean().item()
    return {k: [v / len(samples) for v in row] for k, row in sums.items()}


def calibration_figures(model, processor, samples, batch_size: int, rounds: int) -> dict:
    scores_of = lambda: compute_scores(model, processor, samples, KS, batch_size, progress=False)  # noqa: E731
    times = alternate({
        "plain_forward": lambda: plain_forward(model, processor, samples, batch_size),
        "compute_scores": scores_of,
        "released_style": lambda: released_style_scores(model, processor, samples),
    }, rounds)
    return {
        "samples": len(samples), "batch_size": batch_size, "rounds": times,
        "compute_scores_over_forward": median_ratio(times, "compute_scores", "plain_forward"),
        "released_over_compute_scores": median_ratio(times, "released_style", "compute_scores"),
    }


def calibration_memory(model, processor, samples, counts: list[int], batch_size: int) -> dict:
    """Bytes calibration adds to the resident model, for each number of samples (one run each)."""
    method, start = _memory_probe(next(model.parameters()).device)
    added = {}
    for count in counts:
        stop = start()
        compute_scores(model, processor, samples[:count], KS, batch_size, progress=False)
        added[count] = stop()
    return {"method": method, "added_bytes": added}


# --------------------------------------------------------------------------------- healing


def healing_figures(model, processor, scores, samples, steps: int, batch_size: int, rounds: int) -> dict:
    """A heal run with the plan's survivors trainable vs every decoder layer trainable, on the cut model."""
    plan = select_layers("interlace", scores, 0.25, protected=get_arch(model).protected)
    cut = copy.deepcopy(model)
    remove_layers(cut, plan.dropped)
    layers = len(get_arch(cut).layers)
    survivors, everything = plan.finetuned_after_cut, list(range(layers))
    config = HealConfig(lr=1e-6, warmup_ratio=0.0, batch_size=batch_size, micro_batch_size=batch_size,
                        mixed_precision="no", seed=0)
    train = samples[: steps * batch_size]

    def run(trainable):
        return lambda: heal(cut, processor, train, trainable, config, progress=False)

    times = alternate({"survivors": run(survivors), "all_layers": run(everything)}, rounds)
    lengths = [b["input_ids"].shape for b in training_batches(processor, train, batch_size)]
    text = cut.config.get_text_config(decoder=True)
    # The forward runs on padded (B, T) batches, so the bound counts padded tokens too.
    flops = {name: sum(heal_step_flops(text, [t] * b, trainable) for b, t in lengths)
             for name, trainable in (("survivors", survivors), ("all_layers", everything))}
    measured = median_ratio(times, "survivors", "all_layers")
    bound = flops["survivors"] / flops["all_layers"]
    return {
        "dropped": plan.dropped, "survivors_after_cut": survivors, "layers_after_cut": layers, "steps": steps,
        "batch_size": batch_size, "rounds": times, "survivors_over_all_layers": measured, "flop_bound": bound,
        "off_bound": measured["median"] / bound - 1,
    }


# ------------------------------------------------------------------------------------ SLEB


def sleb_figures(model, processor, samples, batch_size: int) -> dict:
    """One SLEB step (every layer a candidate) on one batch, in plain forwards of that batch."""
    batch = training_batches(processor, samples[:batch_size], batch_size)[0]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    forward = lambda: model(**inputs, use_cache=False)  # noqa: E731
    with torch.no_grad():
        times = alternate({"plain_forward": forward, "sleb_step": lambda: sleb_order(model, [batch], 1, progress=False)}, 1)
    layers = len(get_arch(model).layers)
    text = model.config.get_text_config(decoder=True)
    b, t = batch["input_ids"].shape
    labelled = int((batch["labels"][:, 1:] != -100).sum())
    full = b * decoder_flops(text, t, logits=t)  # a plain forward: every layer, logits at every position
    per_layer = (b * decoder_flops(text, t, logits=0)) / layers
    lm_head = decoder_flops(text, 0, logits=labelled)
    # Ideal: one forward for the cache, then for candidate j the layers above it and the lm_head at labelled tokens.
    ideal = (layers * per_layer + sum((layers - 1 - j) * per_layer + lm_head for j in range(layers))) / full
    step = times[0]["sleb_step"] / times[0]["plain_forward"]
    return {"batch_shape": [b, t], "labelled_tokens": labelled, "candidates": layers, "rounds": times,
            "step_in_forwards": step, "per_candidate_in_forwards": step / layers, "ideal_step_in_forwards": ideal}


# ------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a checkpoint, a zoo name (smollm2) or none for the embedded model")
    parser.add_argument("--data", default=None, help="data spec (default: embedded, or pydocs with --model)")
    parser.add_argument("--samples", type=int, default=64, help="calibration samples for figures 1, 2 and 5")
    parser.add_argument("--memory-samples", default="64,512", help="sample counts compared in figure 3")
    parser.add_argument("--batch-size", type=int, default=32, help="calibration batch size (the pipeline's)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--heal-steps", type=int, default=2)
    parser.add_argument("--heal-batch-size", type=int, default=4)
    parser.add_argument("--sleb-batch-size", type=int, default=8, help="the batch of figure 5 (SLEB's default)")
    parser.add_argument("--skip", default="", help="comma-separated figures to leave out: calibration,memory,healing,sleb")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    torch.set_num_threads(1)
    torch.manual_seed(0)

    load_before = os.getloadavg()[0]
    model, processor = load_model(args.model, device="cpu")
    data = args.data or ("embedded" if args.model is None else "pydocs")
    counts = [int(c) for c in args.memory_samples.split(",")]
    samples = sources.load_samples(data, "calib", max(counts + [args.samples]), seed=0)
    calib = samples[: args.samples]
    out: dict = {"model": args.model or "embedded", "data": data, "threads": torch.get_num_threads(),
                 "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                             "torch": torch.__version__}}

    scores = compute_scores(model, processor, calib, KS, args.batch_size, progress=False)  # warm-up, and the plan of figure 4
    if "calibration" not in skip:
        out["calibration"] = calibration_figures(model, processor, calib, args.batch_size, args.rounds)
    if "memory" not in skip:
        out["memory"] = calibration_memory(model, processor, samples, counts, args.batch_size)
    if "healing" not in skip:
        out["healing"] = healing_figures(model, processor, scores, samples, args.heal_steps, args.heal_batch_size, args.rounds)
    if "sleb" not in skip:
        out["sleb"] = sleb_figures(model, processor, calib, args.sleb_batch_size)
    out["load_average"] = [load_before, os.getloadavg()[0]]

    print(f"{out['model']} on {data}, {out['threads']} torch thread, load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    if "calibration" in out:
        c = out["calibration"]
        for key, goal in (("compute_scores_over_forward", "<= 1.10"), ("released_over_compute_scores", ">= 2")):
            r = c[key]
            print(f"{key:32s} {r['median']:.3f} ({r['min']:.3f}-{r['max']:.3f})  goal {goal}")
    if "memory" in out:
        print("calibration memory added: " + ", ".join(f"{n} samples {b / 2**20:.1f} MiB" for n, b in out["memory"]["added_bytes"].items() if b is not None))
    if "healing" in out:
        h, r = out["healing"], out["healing"]["survivors_over_all_layers"]
        print(f"heal survivors {h['survivors_after_cut']} / all {h['layers_after_cut']} layers: {r['median']:.3f} "
              f"({r['min']:.3f}-{r['max']:.3f}), FLOP bound {h['flop_bound']:.3f}, off by {h['off_bound']:+.1%} (goal within 5%)")
    if "sleb" in out:
        s = out["sleb"]
        print(f"SLEB step on a {s['batch_shape']} batch: {s['step_in_forwards']:.2f} plain forwards "
              f"({s['per_candidate_in_forwards']:.3f} per candidate), FLOP ideal {s['ideal_step_in_forwards']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
